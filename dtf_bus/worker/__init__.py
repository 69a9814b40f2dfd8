"""The worker: hardware, executors, task slots and its connection to the broker."""
