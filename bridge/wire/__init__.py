"""The wire: the OSC codec, the UDP server that answers clients, the client (``aiedit send``), the throttles and
the shared token. Nothing here decides about jobs: the server hands every request to :mod:`bridge.jobs`."""
