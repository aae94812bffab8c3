"""`memstack images build`: the local images, or the service image on the official base."""

from __future__ import annotations

import time

import typer

from memstack.images.build import ALL_IMAGES, IMAGES_ENV, ImageBuilder, image_source

app = typer.Typer(no_args_is_help=True, help="Container images for the containers backend.")


@app.command()
def build(
    images: str = typer.Option(
        None,
        "--images",
        help=f"local (built here from a debootstrap'd Debian) or official (from a registry); default ${IMAGES_ENV} or official",
    ),
    only: list[str] = typer.Option(
        None, "--only", help=f"build just these (and what they stand on): {', '.join(ALL_IMAGES)}"
    ),
) -> None:
    """Build the images that are missing or out of date; a second run does nothing."""
    from memstack.errors import MemstackError

    source = image_source(images)
    for name in only or ():
        if name not in ALL_IMAGES:
            raise MemstackError(f"unknown image {name!r}: choose among {', '.join(ALL_IMAGES)}")
    started = time.monotonic()
    built = ImageBuilder().build(source, only or (ALL_IMAGES if source == "local" else ("service",)))
    typer.echo(
        f"{sum(built.values())} built, {len(built) - sum(built.values())} up to date in {time.monotonic() - started:.0f} s ({source} images)"
    )


@app.command()
def engine() -> None:
    """Make sure a Docker engine answers: start Debian's dockerd when none does and this runs as
    root (installing docker.io first). Prints why not otherwise; never fails."""
    from memstack.images.engine import ensure_engine

    ok, how = ensure_engine()
    typer.echo(f"docker engine: {how}" if ok else f"docker engine: none ({how}); the container suites skip")
