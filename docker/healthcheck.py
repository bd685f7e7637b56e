"""Container HEALTHCHECK: exit 0 only when the service answers 200 on /health/ready.

The image has no curl; this uses the standard library only. It reads the same settings as
the service (TLSTM_PORT) so a changed port keeps the check meaningful.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("TLSTM_PORT", "8000")
    url = f"http://127.0.0.1:{port}/health/ready"
    request = urllib.request.Request(url)
    keys = [k.strip() for k in os.environ.get("TLSTM_API_KEYS", "").split(",") if k.strip()]
    if keys:
        request.add_header("Authorization", f"Bearer {keys[0]}")
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
