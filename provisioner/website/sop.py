"""The website SOP's step 9, "Instalasi website pada server": the same deploy as `provision website deploy`."""

from provisioner.errors import StateError, Waiting
from provisioner.store.models import SiteRow


def install_website_action(ctx) -> dict:
    """Deploy the request's content to its site; a name without a live site gets its hosting first.

    No provisioned site for the name: the hosting request is spawned from the request's
    `website.hosting` (once; the hosting SOP then runs as for any hosting request) and the
    action waits (Waiting); the engine runs it again when that site is provisioned.
    """
    from provisioner.sop.hooks import action_store
    from provisioner.sop.spawn import spawn_hosting
    from provisioner.website.deploy import Website

    website = ctx.request.website
    if website is None:
        raise StateError(f"{ctx.request.id} is a {ctx.request.service} request, not a website request")
    fqdn = website.fqdn
    with action_store(ctx) as store:
        with store.session() as session:
            row = session.get(SiteRow, fqdn)
            state = row.state if row is not None else None
        if state != "provisioned":
            if state == "suspended":
                raise StateError(f"{fqdn} is suspended; unsuspend it, then `provision request resume "
                                 f"{ctx.request.id}`")
            child = spawn_hosting(ctx.config, store, ctx.request.id, source=ctx.source)
            raise Waiting(f"{fqdn} has no live site yet ({state or 'no record'}): hosting request {child} "
                          f"provisions it, and the installation runs once it is live")
        source = website.source + (f"@{website.ref}" if website.ref else "")
        result = Website(ctx.config, store, source=ctx.source, actor="system").deploy(
            fqdn, source, health=website.health_check, checksum=ctx.options.get("checksum"),
            request_id=ctx.request.id, from_request=True)
    if "results" in ctx.options:
        ctx.options["results"].append(result)
    payload = result.payload
    return {"fqdn": fqdn, "release": payload["release"], "previous": payload["previous"],
            "source": payload["source"], "ref": payload["ref"], "commit": payload["commit"],
            "sha256": payload["sha256"], "files": payload["files"], "bytes": payload["bytes"],
            "backup": payload["backup"], "health": payload["health"]}
