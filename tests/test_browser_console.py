"""The browser tests' console check: the named harmless host lines pass, anything else is still an error."""

from __future__ import annotations

from browser_console import harmful

# Lines as the pages reported them (ComfyUI 0.3.75 with pages 1.32.9 and 1.58.1, under --disable-api-nodes).
SEEN_HARMLESS = [
    "console: Connecting to 'https://api.comfy.org/nodes?node_id=comfyui-avsync&node_id=comfy-core' violates the "
    "following Content Security Policy directive: \"connect-src 'self'\". The action has been blocked.",
    "HTTP 404 http://127.0.0.1:37205/api/jobs?status=in_progress,pending&limit=200&offset=0",
    "HTTP 404 http://127.0.0.1:37205/api/jobs/0c8e3f0e-5a57-4c3e-9d0b-6a1f2b3c4d5e",
    "HTTP 404 http://127.0.0.1:37205/api/jobs/0c8e3f0e-5a57-4c3e-9d0b-6a1f2b3c4d5e/assets?limit=500&offset=0",
    "console: [Jobs API] Error fetching jobs: JobsApiError: Failed to fetch jobs: 404\n"
    "    at fetchJobsRaw (http://127.0.0.1:50927/assets/api-BA-sjSl5.js:1:30008)\n"
    "    at async fetchHistoryPage (http://127.0.0.1:50927/assets/api-BA-sjSl5.js:1:30599)",
    "console: Failed to fetch queue: JobsApiError: Failed to fetch jobs: 404\n"
    "    at fetchJobsRaw (http://127.0.0.1:41755/assets/api-BA-sjSl5.js:1:30008)\n"
    "    at async Promise.allSettled (index 0)",
    "HTTP 404 http://127.0.0.1:50927/api/view?type=input&filename=lion.png&subfolder=&rand=0.19250740630876084",
    "HTTP 404 http://127.0.0.1:50927/api/view?filename=lion_roar.wav&type=input&subfolder=&rand=0.9095684267843476",
    "console: Failed to load resource: the server responded with a status of 404 (Not Found)",
    "console: Connecting to 'https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
    "v1-5-pruned-emaonly.safetensors' violates the following Content Security Policy directive: \"connect-src "
    "'self'\". The action has been blocked.",
    "console: Fetch API cannot load https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
    "v1-5-pruned-emaonly.safetensors. Refused to connect because it violates the document's Content Security Policy.",
]


def test_the_named_harmless_host_lines_pass():
    assert harmful(SEEN_HARMLESS) == []


def test_an_unlisted_console_error_or_failed_request_still_fails():
    errors = [
        "console: TypeError: Cannot read properties of undefined (reading 'value')",
        "page error: ReferenceError: avsync is not defined",
        # The same kinds of line about something else than the named host behaviour:
        "console: Connecting to 'https://huggingface.co/x.safetensors' violates the following Content Security "
        "Policy directive: \"connect-src 'self'\". The action has been blocked.",
        "console: Fetch API cannot load https://huggingface.co/x.safetensors. Refused to connect because it violates "
        "the document's Content Security Policy.",
        "HTTP 500 http://127.0.0.1:37205/api/jobs?status=in_progress,pending&limit=200&offset=0",
        "HTTP 404 http://127.0.0.1:37205/api/jobs/0c8e3f0e-5a57-4c3e-9d0b-6a1f2b3c4d5e/outputs/video.mp4",
        "HTTP 404 http://127.0.0.1:37205/api/view?filename=browser_clicks.wav&type=input&subfolder=",
        "HTTP 404 http://127.0.0.1:37205/extensions/comfyui-avsync/avsync.js",
        "console: [Jobs API] Error fetching jobs: JobsApiError: Failed to fetch jobs: 500",
        "console: Failed to fetch queue: TypeError: Cannot read properties of undefined (reading 'jobs')",
        SEEN_HARMLESS[0] + " And then something else.",
    ]
    assert harmful(errors) == errors
