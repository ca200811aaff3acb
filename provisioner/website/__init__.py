"""Website deploys: a site's content in releases, switched atomically, with rollback.

source: fetch an archive or a git ref on the controller and refuse unsafe content;
layout: the release layout of a site's home and its live state;
deploy: plan, apply, releases and rollback; sop: the website SOP's installation action.
"""
