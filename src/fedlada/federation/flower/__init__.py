"""Flower runtime: a ServerApp and a ClientApp over the same server, client and host objects.

- `records`: project messages <-> Flower records (the one place where they are mapped);
- `node`: what a SuperNode does with a message (load the client's state, handle, save);
- `apps`: the `ServerApp` (the in-process `Runner` with a Flower channel) and the `ClientApp`;
- `launch` and `cli`: `fedlada flower simulate` and `fedlada flower local`.

Only `records`, `apps` and `launch` import `flwr` (the optional `fedlada[flower]` extra).
"""
