"""`provision serve`: the approval webhook for the e-office system."""

import click

from provisioner.cli._common import config_option, open_engine


@click.command()
@click.option("--host", help="Address to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, help="Port (default from config: 8787).")
@config_option
def serve(host, port, config_path):
    """Accept signed approval decisions over HTTP (POST /v1/decisions)."""
    from provisioner.webhook import PATH, DecisionServer

    engine = open_engine(config_path)
    settings = engine.config.webhook
    secret = engine.config.webhook_secret()
    address = (host or settings.host, settings.port if port is None else port)
    server = DecisionServer(address, engine, secret, max_skew=settings.max_skew_seconds,
                            timeout=settings.client_timeout_seconds, workers=settings.workers,
                            max_connections=settings.max_connections,
                            batch_window=settings.batch_window_seconds)
    click.echo(f"listening on http://{address[0]}:{server.server_address[1]}{PATH}"
               + (f"; approvals within {settings.batch_window_seconds:g} s are provisioned as one batch"
                  if settings.batch_window_seconds > 0 else ""), err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
