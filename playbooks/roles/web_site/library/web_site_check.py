#!/usr/bin/python
"""Test a staged Apache and PHP-FPM configuration in one call, before anything reloads.

Runs `apache2ctl configtest`, `php-fpmX -t` for each PHP version given and
`apache2ctl -S` (the vhosts Apache would serve), and returns what each said.
The role judges the answers (warnings count, a ServerName served twice) and
puts every file back when it refuses them; this only asks. One round trip to
the host where three tasks made one each. Changes nothing.
"""

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: web_site_check
short_description: Apache's configtest and vhost dump and PHP-FPM's test of the staged configuration (read only)
options:
  php_versions: {type: list, elements: str, default: [], description: "PHP versions whose pools changed."}
"""

RETURN = r"""
configtest: {type: dict, description: "{rc, output}: apache2ctl configtest, stdout and stderr together, trimmed."}
php: {type: dict, description: "version -> {rc, output} of php-fpmVERSION -t."}
vhosts: {type: str, description: "apache2ctl -S, stdout."}
vhosts_rc: {type: int, description: "apache2ctl -S's exit status."}
"""


def said(module, argv):
    rc, out, err = module.run_command(argv)
    return {"rc": rc, "output": (out + "\n" + err).strip()}


def main():
    module = AnsibleModule(argument_spec={
        "php_versions": {"type": "list", "elements": "str", "default": []},
    }, supports_check_mode=False)
    configtest = said(module, ["apache2ctl", "configtest"])
    php = {version: said(module, [f"php-fpm{version}", "-t"]) for version in module.params["php_versions"]}
    rc, vhosts, _ = module.run_command(["apache2ctl", "-S"])
    module.exit_json(changed=False, configtest=configtest, php=php, vhosts=vhosts, vhosts_rc=rc)


if __name__ == "__main__":
    main()
