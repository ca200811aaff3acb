"""The office's SOPs as data, the engine that runs them, their SLA calendar and hooks."""
