"""`uniseg3d serve`: the browser app. `session` holds one open scene (cached backbone features,
prompts in, masks out) as plain functions; `uploads` checks uploaded files; `app` wires both to
a viser server (the 3D view, the panel and the websocket transport)."""
