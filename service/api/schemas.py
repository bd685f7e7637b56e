"""Request and response bodies of the HTTP API (they define the OpenAPI document).

``/v1/completions`` follows OpenAI's legacy completions API; a "token" is one character.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# ---------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------------- completions


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="send a last chunk carrying the usage (OpenAI)")


class CompletionRequest(BaseModel):
    """OpenAI's completion request; lengths are counted in characters."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="id of a served language model (see GET /v1/models)")
    prompt: str | list[str] = Field(description="the text to continue, or a list of texts (one choice each)")
    max_tokens: int | None = Field(16, ge=0, description="characters to generate at most")
    temperature: float = Field(1.0, ge=0, description="0 is greedy; higher is more random")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: keep the most likely characters up to this mass")
    top_k: int = Field(0, ge=0, description="keep the k most likely characters (0 keeps all)")
    n: int = Field(1, ge=1, description="choices per prompt; only 1 is supported")
    best_of: int | None = Field(None, ge=1, description="only 1 (or unset) is supported")
    stream: bool = Field(False, description="answer with Server-Sent Events, one chunk per batch of characters")
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=50, description="report this many most likely alternatives per character")
    echo: bool = Field(False, description="return the prompt (with its log-probabilities) before the completion")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the completion (not returned)")
    seed: int | None = Field(None, ge=0, description="same seed, same text, alone or under load")
    # The ranges are checked by the sampler (a 400 naming the parameter) and shown here.
    presence_penalty: float = Field(
        0.0, json_schema_extra={"minimum": -2, "maximum": 2},
        description="subtracted once from the logit of every character generated so far (OpenAI; 0 is off)",
    )
    frequency_penalty: float = Field(
        0.0, json_schema_extra={"minimum": -2, "maximum": 2},
        description="subtracted from a character's logit once per time it was generated (OpenAI; 0 is off)",
    )
    repetition_penalty: float = Field(
        1.0, json_schema_extra={"exclusiveMinimum": 0},
        description="divides the positive and multiplies the negative logits of every character in the "
        "prompt or generated so far (vLLM/TGI; 1 is off, > 1 discourages repeats)",
    )
    suffix: str | None = Field(None, description="not supported (must be null)")
    user: str | None = Field(None, description="ignored")
    state: str | None = Field(
        None,
        description="continue from this state token (from return_state or a WebSocket snapshot): the prompt is "
        "read after the text the token stands for and may be empty; then generation goes on exactly as the "
        "stream it came from would have (its sampler too, unless a seed is given)",
    )
    return_state: bool = Field(
        False,
        description="add 'state', a signed token of the stream's whole decoding state, to the response (to the "
        "last chunk when streaming); any replica continues from it",
    )


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Usage(BaseModel):
    prompt_tokens: int = Field(description="characters of the prompt(s)")
    completion_tokens: int = Field(description="characters generated (stop strings included)")
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# ---------------------------------------------------------------------- models


class InputFormCard(BaseModel):
    """One form an input may take (``input_format``)."""

    name: str
    shape: list[int | str] = Field(description="ints for fixed sizes, 'T' for the number of steps")
    range: list[float] | None = Field(None, description="the range of the numbers, when they are numbers")
    description: str


class ModelInput(BaseModel):
    type: Literal["tokens", "features"]
    size: int
    max_length: int
    forms: list[InputFormCard] = Field(default_factory=list, description="the forms an input may take")


class ModelCard(BaseModel):
    """OpenAI's model object plus what this model is and where it runs."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tlstm"
    kind: Literal["lm", "classifier"]
    depth: int | None = None
    input: ModelInput
    vocab_size: int | None = None
    vocab: list[str] | None = Field(None, description="the text of every token id (language and token models)")
    labels: list[str] | None = None
    provider: str | None = Field(None, description="the execution provider in use")
    providers: list[str] = Field(default_factory=list)
    architecture: dict[str, Any] = Field(default_factory=dict)
    parameters: int | None = Field(None, description="the model's parameter count, when the package records it")
    metrics: dict[str, Any] = Field(default_factory=dict, description="what training measured (held-out loss, accuracy...)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------------- classify


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="id of a served classifier")
    inputs: list[Any] = Field(
        min_length=1,
        description="sequences of the model's input type: strings (token models), lists of "
        "feature vectors, or lists of numbers (one feature per step); for image models also "
        "raw images (H rows of W pixel values) or their H*W pixel values, prepared on the "
        "server as the model's card lists under input.forms",
    )
    input_format: str = Field(
        "auto",
        description="the form of every input: 'auto' (by its shape) or one of the model's "
        "input.forms ('image', 'pixels', 'sequence'; 'text', 'ids' for token models)",
    )
    top_k: int | None = Field(None, ge=1, description="also list the k most likely classes")
    return_probabilities: bool = Field(True, description="include every class's probability")


class ClassScore(BaseModel):
    label: str
    class_index: int
    probability: float


class ClassifyResult(BaseModel):
    index: int
    label: str
    class_index: int
    probabilities: list[float] | None = None
    top: list[ClassScore] | None = None


class ClassifyUsage(BaseModel):
    inputs: int
    steps: int = Field(description="sequence steps read, all inputs together")


class ClassifyResponse(BaseModel):
    id: str
    object: Literal["classification"] = "classification"
    created: int
    model: str
    labels: list[str]
    data: list[ClassifyResult]
    usage: ClassifyUsage


# ---------------------------------------------------------------------- health and info


class Health(BaseModel):
    status: Literal["ok", "starting", "shutting_down"]


class Info(BaseModel):
    name: Literal["tlstm"] = "tlstm"
    version: str
    status: Literal["ok", "starting", "shutting_down"]
    models: dict[str, ModelCard]
    providers: dict[str, list[str]] = Field(description="'requested', 'available' (by this onnxruntime build)")
    limits: dict[str, float | int]
    auth: bool = Field(description="whether API keys are required")
