"""Monitoring: metrics, task views, anomalies and worker scores, fed by broker hooks."""
