"""`provision sop`: the SOPs the toolkit runs, as tables or as a Mermaid flowchart."""

import click

from provisioner.cli._common import config_option, json_option, load_config, print_json, table


def _sops(config_path):
    """The configuration and the action names the SOPs may bind: all that reading the SOPs
    needs. The state database (and SQLAlchemy with it) is not opened to list or show them."""
    from provisioner.sop.hooks import ACTIONS

    return load_config(config_path), ACTIONS.names()


@click.group()
def sop():
    """The office's SOPs (sop/*.yaml)."""


@sop.command("list")
@config_option
@json_option
def list_(config_path, as_json):
    """List the SOPs with their document number and step count."""
    from provisioner.sop.model import load_all

    config, actions = _sops(config_path)
    sops = load_all(config.sop_dir, actions)
    rows = [{"name": s.name, "title": s.title, "office": s.office, "number": s.document.number,
             "steps": len(s.steps), "actions": sorted(s.actions())} for s in sops]
    if as_json:
        return print_json(rows)
    table("SOPs", ["name", "title", "office", "SOP number", "steps", "actions"],
          [(r["name"], r["title"], r["office"], r["number"] or "(no number)", r["steps"], ", ".join(r["actions"]))
           for r in rows], long=("title",))


def mermaid(sop):
    """The SOP as a Mermaid flowchart (decisions as diamonds, actions marked)."""
    lines = ["flowchart TD"]
    for step in sop.steps:
        text = f"{step.number}. {step.activity}<br/>{sop.roles[step.actor]}, {step.standard.text or '-'}"
        if step.action:
            text += f"<br/>action: {step.action}"
        text = text.replace('"', "'")
        lines.append(f'    {step.key}{{"{text}"}}' if step.branches else f'    {step.key}["{text}"]')
    for step in sop.steps:
        if step.branches:
            for branch in step.branches.values():
                label = branch.label + (f" / {branch.action}" if branch.action else "")
                lines.append(f'    {step.key} -->|"{label}"| {branch.next}')
        else:
            following = sop.default_next(step)
            if following:
                lines.append(f"    {step.key} --> {following.key}")
    return "\n".join(lines)


def sop_dict(s):
    return {
        "name": s.name, "title": s.title, "office": s.office,
        "document": s.document.model_dump(mode="json"), "roles": s.roles,
        "steps": [dict(step.model_dump(mode="json", exclude={"waktu"}),
                       waktu=step.standard.as_dict(), automated=step.automated) for step in s.steps],
    }


@sop.command()
@click.argument("name")
@click.option("--mermaid", "as_mermaid", is_flag=True, help="Print a Mermaid flowchart.")
@config_option
@json_option
def show(name, as_mermaid, config_path, as_json):
    """Show the flow of SOP NAME step by step."""
    from provisioner.sop.model import load_sop

    config, actions = _sops(config_path)
    s = load_sop(config.sop_dir, name, known_actions=actions)
    if as_json:
        return print_json(sop_dict(s))
    if as_mermaid:
        return click.echo(mermaid(s))
    click.echo(f"{s.title}  ({s.document.number or 'no document number'}, office {s.office})")

    def goes_to(step):
        if step.branches:
            return "; ".join(f"{b.label} -> {sop_step.number} {b.next}"
                             + (f" [{b.action}]" if b.action else "")
                             for b in step.branches.values()
                             for sop_step in [s.step(b.next)])
        following = s.default_next(step)
        return f"{following.number} {following.key}" if following else "end"

    table(s.name, ["no", "key", "activity", "actor", "kelengkapan", "waktu", "output", "action", "next"],
          [(st.number, st.key, st.activity, s.roles[st.actor], ", ".join(st.kelengkapan),
            st.standard.text or "-", ", ".join(st.output), st.action or ("decision" if st.approval else ""),
            goes_to(st)) for st in s.steps], long=("activity", "kelengkapan", "output"))
