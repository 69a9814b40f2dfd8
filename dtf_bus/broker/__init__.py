"""The broker: task state, workers, placement, stealing, client requests; sockets only in server.py."""
