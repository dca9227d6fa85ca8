"""``daxmode sim create``: a simulated kernel on disk to try daxmode on, without root or a VM.

The tree is used with ``daxmode --sim DIR ...`` (the one door that attaches the simulator);
building it is all this command does.
"""

from __future__ import annotations

import click

from daxmode.cli._common import SIZE, echo_json
from daxmode.sizes import human


@click.group("sim")
def sim() -> None:
    """A simulated kernel (sysfs, memory blocks, /dev/dax) in a directory: try daxmode safely."""


@sim.command("create")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--devices", type=click.IntRange(1, 16), default=2, show_default=True, help="dax devices.")
@click.option(
    "--size", type=SIZE, default="1G", show_default=True, help="Bytes per device: whole 128 MiB blocks."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create_cmd(directory: str, devices: int, size: int, as_json: bool) -> None:
    """Build a machine in DIR (new or empty): DEVICES pmem namespaces in devdax, one per region,
    memory auto-online off; each /dev/daxN.0 is a sparse file of SIZE that famfs can format."""
    from daxmode import sim as simulator

    simulator.machine(directory, devices=devices, size=size)
    names = [f"dax{i}.0" for i in range(devices)]
    if as_json:
        echo_json(
            {"root": directory, "devices": [{"chardev": n, "size": size, "mode": "devdax"} for n in names]}
        )
        return
    click.echo(
        f"{directory}: simulated kernel with {', '.join(names)} ({human(size)} each, devdax); "
        f"try: daxmode --sim {directory} list"
    )
