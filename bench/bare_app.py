"""The baseline: a bare Flask app with one trivial POST endpoint that answers a small JSON 202.

Served by the same gunicorn settings as Tributary, it measures what the stack (gunicorn + Flask +
the loopback network + wrk) costs without any of Tributary's work, so `Tributary / bare` isolates
what identify adds: auth, validation, the INSERT and the doorbell.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.post("/v1/identify")
def identify() -> Response:
    response = jsonify({"event_id": "evt_bare", "duplicate": False})
    response.status_code = 202
    return response
