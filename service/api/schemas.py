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
    presence_penalty: float = Field(0.0, description="only 0 is supported")
    frequency_penalty: float = Field(0.0, description="only 0 is supported")
    suffix: str | None = Field(None, description="not supported (must be null)")
    user: str | None = Field(None, description="ignored")


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


class ModelInput(BaseModel):
    type: Literal["tokens", "features"]
    size: int
    max_length: int


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
    labels: list[str] | None = None
    provider: str | None = Field(None, description="the execution provider in use")
    providers: list[str] = Field(default_factory=list)
    architecture: dict[str, Any] = Field(default_factory=dict)


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
        "feature vectors, or lists of numbers (one feature per step)",
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
