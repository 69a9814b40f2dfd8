"""The broker's HTTP API (tornado): REST, WebSocket, Prometheus and its authentication."""
