"""A minimal web app on videoq: a form that submits a job, a page that shows its progress.

    pip install -e . flask
    VIDEOQ_REDIS_URL=redis://localhost:6379/0 flask --app examples/flask_app.py run

It uses only the Python client (``producers.Client``); a videoq worker does the rest.
"""

from __future__ import annotations

from html import escape

from flask import Flask, redirect, request, url_for
from werkzeug.wrappers import Response

from producers import Client, JobNotFound, RequestError, Unavailable

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>videoq</title>{head}</head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">{body}</body></html>"""

FORM = """<h1>Make a video</h1>{error}
<form method="post" action="/jobs">
  <p><label>Image URL <input name="image_url" size="50" required></label></p>
  <p><label>Prompt <input name="prompt" size="50"></label></p>
  <p><label>Duration <select name="duration"><option>5</option><option>10</option></select>
  </label></p>
  <p><button type="submit">Generate</button></p>
</form>"""


def create_app(client: Client | None = None) -> Flask:
    app = Flask(__name__)
    videoq = client or Client()

    @app.get("/")
    def index() -> str:
        return PAGE.format(head="", body=FORM.format(error=""))

    @app.post("/jobs")
    def submit() -> Response | tuple[str, int]:
        try:
            job_id = videoq.submit(
                request.form.get("image_url", ""),
                prompt=request.form.get("prompt") or None,
                duration=request.form.get("duration", "5"),
            )
        except RequestError as exc:
            error = f'<p role="alert" style="color: #b00">{escape(str(exc))}</p>'
            return PAGE.format(head="", body=FORM.format(error=error)), 422
        except Unavailable as exc:
            return PAGE.format(head="", body=f"<p>{escape(str(exc))}</p>"), 503
        return redirect(url_for("show", job_id=job_id), code=303)

    @app.get("/jobs/<job_id>")
    def show(job_id: str) -> str | tuple[str, int]:
        try:
            job = videoq.get(job_id)
        except JobNotFound:
            return PAGE.format(head="", body="<p>No such job.</p>"), 404
        state = escape(job.state.value)
        if job.is_terminal:
            head = ""
            # videoq stores only http(s) video URLs; a page that renders links checks anyway.
            if job.video_url and job.video_url.lower().startswith(("https://", "http://")):
                result = f'<p><a href="{escape(job.video_url)}">Your video</a></p>'
            else:
                result = f"<p>{escape(job.error.message if job.error else '')}</p>"
        else:  # refresh until the job ends
            head = '<meta http-equiv="refresh" content="2">'
            result = "<p>Working on it; this page refreshes by itself.</p>"
        body = f'<h1>Job {escape(job.id)}</h1><p>State: <b id="state">{state}</b></p>{result}'
        return PAGE.format(head=head, body=body)

    return app


if __name__ == "__main__":
    create_app().run()
