"""Which of the page's console errors and failed requests are known, harmless host lines, and which are errors.

The browser tests fail on any console error or failed request the page reports, except the lines named here,
each for a reason that lies with the host (server or page version) and not with the pack. Anything not matched in
full, line by line, stays an error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _declared_model_urls() -> str:
    """The model addresses the shipped workflows declare (node properties' `models`), as one regex alternative."""
    urls = {
        model["url"]
        for path in WORKFLOWS.glob("*.json")
        for node in json.loads(path.read_text()).get("nodes", [])
        for model in node.get("properties", {}).get("models", [])
    }
    return "|".join(re.escape(url) for url in sorted(urls))


MODEL_URL = _declared_model_urls()

HARMLESS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "newer servers send a Content-Security-Policy header; under --disable-api-nodes (offline) it blocks the "
        "page's lookup of the workflow's node packs in the online registry",
        re.compile(
            r"console: Connecting to 'https://api\.comfy\.org/nodes\?node_id=[\w.,&=-]*' violates the following "
            r"Content Security Policy directive: \"connect-src 'self'\"\. The action has been blocked\."
        ),
    ),
    (
        "the newest page asks for the size of each model file a workflow declares (its `models` list); under "
        "--disable-api-nodes (offline) the newer servers' Content-Security-Policy blocks that request",
        re.compile(
            rf"console: (Connecting to '({MODEL_URL})' violates the following Content Security Policy directive: "
            rf"\"connect-src 'self'\"\. The action has been blocked\.|Fetch API cannot load ({MODEL_URL})\. Refused "
            r"to connect because it violates the document's Content Security Policy\.)"
        ),
    ),
    (
        "the newest page asks the Jobs API for the job list, and after a run for the job and its outputs; servers "
        "older than the page lack that API",
        re.compile(r"HTTP 404 http://127\.0\.0\.1:\d+/api/jobs(/[0-9a-f-]{36}(/assets)?)?(\?[\w.,&=%-]*)?"),
    ),
    (
        "the newest page's own log lines for those Jobs API 404s, for the job list and the queue (with their stack)",
        re.compile(
            r"console: (\[Jobs API\] Error fetching jobs|Failed to fetch queue): "
            r"JobsApiError: Failed to fetch jobs: 404(\n\s+at .*)*"
        ),
    ),
    (
        "the placeholder inputs the shipped workflows name (workflows/README.md): the page asks for them to show "
        "them, and a fresh server has none",
        re.compile(
            r"HTTP 404 http://127\.0\.0\.1:\d+/api/view\?([\w.%-]+=[\w.%-]*&)*filename=(lion\.png|lion_roar\.wav)&\S*"
        ),
    ),
    (
        "the browser's own line for every 404 (the request itself is judged by its HTTP line above)",
        re.compile(r"console: Failed to load resource: the server responded with a status of 404 \(Not Found\)"),
    ),
)


def harmful(errors: list[str]) -> list[str]:
    """The errors that are not one of the named harmless host lines."""
    return [e for e in errors if not any(pattern.fullmatch(e) for _, pattern in HARMLESS)]
