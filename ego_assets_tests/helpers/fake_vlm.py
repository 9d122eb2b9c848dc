"""A local OpenAI-compatible chat-completions server for the captioner tests (scripted answers, errors,
delays), so that the real HTTP client runs against a real socket."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def good_answer(body: dict) -> str:
    text = body["messages"][1]["content"][0]["text"]
    hand = "right" if "person's right hand" in text else "left"
    obj = "mug" if hand == "right" else "drawer"
    # the instruction as a model might word it; ours is composed from verb + object
    return json.dumps({"reasoning": f"The {hand} hand reaches the {obj}.", "verb": "Pick up",
                       "object": f"the {obj}.", "instruction": f"Pick up the {obj} with your {hand} hand."})


class FakeVLM:
    """A chat-completions server: each request takes the next scripted action, else a good answer.

    Actions: ("answer", text) | ("status", code, headers, body) | ("sleep", seconds)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                          "t": time.monotonic()})
                    action = fake.script.pop(0) if fake.script else ("answer", None)
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = ("answer", None)
                if action[0] == "status":
                    _, code, headers, text = action
                    self.send_response(code)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    data = text.encode()
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                content = action[1] if action[1] is not None else good_answer(body)
                data = json.dumps({"id": "c1", "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client that timed out: not our problem
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
