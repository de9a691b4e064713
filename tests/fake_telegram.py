"""A fake Telegram Bot API on 127.0.0.1: queues updates, records what the bot sends, can go down or throttle."""
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeBotAPI:
    def __init__(self, token="123:TESTTOKEN"):
        self.token = token
        self.cond = threading.Condition()
        self.updates = []  # queued updates not yet confirmed by an offset
        self.next_update = 1
        self.sent = []  # (chat_id, text, reply_markup)
        self.photos = []  # (chat_id, image bytes, caption)
        self.edits = []  # (chat_id, message_id, new text, reply_markup) of every edited message
        self.commands = None
        self.answered = []
        self.down = False
        self.down_hits = 0
        self.throttle = 0  # answer the next N sendMessage calls with 429
        self.refuse = {}  # chat id -> "blocked" (403) or "garbage" (200, not JSON) for every send to it
        self.served_at = {}  # update_id -> time.perf_counter() when getUpdates handed it out
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- what tests do -------------------------------------------------------------------------
    def message(self, text, chat=1, user=1, chat_type="private"):
        msg = {"message_id": self.next_update, "date": int(time.time()), "text": text,
               "chat": {"id": chat, "type": chat_type, **({"title": "desk"} if chat_type != "private" else {})},
               "from": {"id": user, "is_bot": False, "first_name": "op"}}
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self._push({"message": msg})

    def press(self, action, chat=1, user=1, message_id=None):
        """Presses the button of action ("flatten", or a full callback data) on the newest message that has one,
        or on message message_id (an older question's button)."""
        with self.cond:
            sent = [(i + 1, t, m) for i, (c, t, m) in enumerate(self.sent) if c == chat and m]
        buttons = [(i, t, b["callback_data"]) for i, t, m in sent for row in m["inline_keyboard"] for b in row
                   if b["callback_data"].split("#")[0] == action.split("#")[0] and (message_id in (None, i))]
        i, text, data = buttons[-1] if buttons else (1, "confirm?", action)
        return self._push({"callback_query": {
            "id": f"cq{self.next_update}", "from": {"id": user, "is_bot": False, "first_name": "op"},
            "chat_instance": "ci", "data": data,
            "message": {"message_id": i, "date": int(time.time()), "chat": {"id": chat, "type": "private"},
                        "text": text}}})

    def _push(self, body):
        with self.cond:
            update_id = self.next_update
            self.next_update += 1
            self.updates.append(dict(body, update_id=update_id))
            self.cond.notify_all()
        return update_id

    def wait_for(self, predicate, timeout=10.0):
        """Waits until predicate(self) holds (checked whenever the bot calls the API)."""
        deadline = time.time() + timeout
        with self.cond:
            while not predicate(self):
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError("the fake Bot API never saw what the test waited for")
                self.cond.wait(left)

    def texts(self, chat=None):
        return [t for c, t, _ in self.sent if chat is None or c == chat]

    # --- the HTTP side -------------------------------------------------------------------------
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                kind = self.headers.get("Content-Type", "")
                if kind.startswith("multipart/form-data"):  # a file upload (sendPhoto): its parts by name
                    params = _multipart(body, kind.split("boundary=")[1].strip('"'))
                else:
                    raw = body.decode()
                    params = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                    if kind.startswith("application/json") and raw:
                        params = json.loads(raw)
                prefix = f"/bot{api.token}/"
                if not self.path.startswith(prefix):
                    return self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                if api.down:
                    with api.cond:
                        api.down_hits += 1
                        api.cond.notify_all()
                    return self._reply(502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
                method = self.path[len(prefix):]
                status, body = api._call(method, params)
                self._reply(status, body)

            do_GET = do_POST

            def _reply(self, status, body):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a long poll while stopping

        return Handler

    def _call(self, method, params):
        ok = lambda result: (200, {"ok": True, "result": result})  # noqa: E731
        with self.cond:
            try:
                if method == "getMe":
                    return ok({"id": 42, "is_bot": True, "first_name": "Desk", "username": "desk_bot",
                               "can_join_groups": True, "can_read_all_group_messages": False,
                               "supports_inline_queries": False})
                if method in ("deleteWebhook", "setMyCommands", "answerCallbackQuery", "close", "logOut"):
                    if method == "setMyCommands":
                        self.commands = json.loads(params["commands"])
                    if method == "answerCallbackQuery":
                        self.answered.append(params.get("callback_query_id"))
                    return ok(True)
                if method == "getUpdates":
                    return ok(self._updates(params))
                if method == "sendPhoto":
                    chat = int(params["chat_id"])
                    self.photos.append((chat, params["photo"], params.get("caption", "")))
                    return ok({"message_id": 1000 + len(self.photos), "date": int(time.time()),
                               "chat": {"id": chat, "type": "private"},
                               "photo": [{"file_id": "p", "file_unique_id": "p", "width": 800, "height": 420}]})
                if method == "editMessageText":  # kept apart: an edit is not a new message
                    markup = json.loads(params["reply_markup"]) if params.get("reply_markup") else None
                    self.edits.append((int(params["chat_id"]), int(params["message_id"]), params["text"], markup))
                    return ok({"message_id": int(params["message_id"]), "date": int(time.time()),
                               "text": params["text"], "chat": {"id": int(params["chat_id"]), "type": "private"}})
                if method == "sendMessage":
                    if method == "sendMessage" and self.throttle > 0:
                        self.throttle -= 1
                        return 429, {"ok": False, "error_code": 429, "description": "Too Many Requests",
                                     "parameters": {"retry_after": 1}}
                    markup = json.loads(params["reply_markup"]) if "reply_markup" in params else None
                    chat = int(params.get("chat_id", 0))
                    if method == "sendMessage" and self.refuse.get(chat) == "blocked":
                        return 403, {"ok": False, "error_code": 403,
                                     "description": "Forbidden: bot was blocked by the user"}
                    if method == "sendMessage" and self.refuse.get(chat) == "garbage":
                        return 200, b"<html>upstream hiccup</html>"
                    self.sent.append((chat, params["text"], markup))
                    return ok({"message_id": len(self.sent), "date": int(time.time()), "text": params["text"],
                               "chat": {"id": chat, "type": "private"}})
                return 400, {"ok": False, "error_code": 400, "description": f"method {method} not faked"}
            finally:
                self.cond.notify_all()

    def _updates(self, params):
        offset = int(params.get("offset", 0) or 0)
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        timeout = min(float(params.get("timeout", 0) or 0), 0.5)
        deadline = time.time() + timeout
        while not self.updates and time.time() < deadline and not self.down:
            self.cond.wait(deadline - time.time())
        now = time.perf_counter()
        for u in self.updates:
            self.served_at.setdefault(u["update_id"], now)
        return list(self.updates)


def _multipart(body, boundary):
    """{name: text, or bytes for a file} of a multipart/form-data body."""
    parts = {}
    for part in body.split(b"--" + boundary.encode())[1:-1]:
        head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        parts[name] = value if b"filename=" in head else value.decode()
    return parts
