"""Download a known checkpoint into place and verify it.

    python -m rnsf.download model=adm_imagenet256            # the preset's model.checkpoint
    python -m rnsf.download model=ddpm_celebahq256 paths.checkpoint_dir=/data/ckpt
    python -m rnsf.download ffhq_10m.pt                      # by upstream file name
    python -m rnsf.download --list                           # the registry
    python -m rnsf.download model=diffusers model.path=google/ddpm-cat-256   # into the HF cache

The file is streamed to a temporary file next to its destination, with a progress bar, its size
and SHA-256 (or MD5) are checked when the registry knows them, and only then is it renamed into
place; a failed, rejected or interrupted download leaves nothing behind. An existing file is
verified and kept (`--force` downloads again).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from rnsf.denoisers.checkpoints import RELEASES, Release
from rnsf.utils.errors import UserError

CHUNK = 1 << 20


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def md5_of(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, known: Release) -> None:
    """Raise a UserError when `path` does not have the known size, SHA-256 or MD5."""
    size = path.stat().st_size
    if known.num_bytes is not None and size != known.num_bytes:
        raise UserError(f"{path} has {size:,} bytes, {known.file} has {known.num_bytes:,}")
    for algorithm, expected, digest_of in (
        ("sha256", known.sha256, sha256_of),
        ("md5", known.md5, md5_of),
    ):
        if expected is not None:
            digest = digest_of(path)
            if digest != expected:
                raise UserError(f"{path} has {algorithm} {digest}, {known.file} has {expected}")


def fetch(url: str, dest: str | Path, known: Release, progress: bool = True) -> Path:
    """Stream `url` to `dest` through a temporary file, check size and SHA-256 (when known)
    and rename it into place; on any failure remove the temporary file and raise."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            kind = response.headers.get("Content-Type", "") or ""
            if kind.startswith(("text/html", "application/xml", "text/xml")):
                raise UserError(f"{url} answered with a {kind.split(';')[0]} page, not a file")
            length = response.headers.get("Content-Length")
            total = int(length) if length else known.num_bytes
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    md5.update(block)
                    bar.update(len(block))
        size = tmp.stat().st_size
        if known.num_bytes is not None and size != known.num_bytes:
            raise UserError(
                f"download of {known.file} from {url} has {size:,} bytes, expected "
                f"{known.num_bytes:,}; nothing was written"
            )
        if known.sha256 is not None and digest.hexdigest() != known.sha256:
            raise UserError(
                f"download of {known.file} from {url} has sha256 {digest.hexdigest()}, expected "
                f"{known.sha256}; nothing was written"
            )
        if known.md5 is not None and md5.hexdigest() != known.md5:
            raise UserError(
                f"download of {known.file} from {url} has md5 {md5.hexdigest()}, expected "
                f"{known.md5}; nothing was written"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def download(
    known: Release,
    dest: str | Path,
    urls: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Put `known` at `dest`, trying `urls` (default: the official address, then the mirrors)
    in order. An existing file is verified and kept unless `force`."""
    dest = Path(dest)
    if dest.exists() and not force:
        try:
            verify(dest, known)
        except UserError as err:
            raise UserError(f"{err}; pass --force to download it again") from None
        print(f"{dest} is already there", file=sys.stderr)
        return dest
    errors = []
    for url in urls or known.urls:
        print(f"downloading {known.file} from {url}", file=sys.stderr)
        try:
            return fetch(url, dest, known, progress)
        except (urllib.error.URLError, OSError, UserError) as err:
            reason = getattr(err, "reason", None) or str(err)
            errors.append(f"{url}: {reason}")
            print(f"  failed: {reason}", file=sys.stderr)
    extra = f" ({known.note})" if known.note else ""
    raise UserError(
        f"could not download {known.file}{extra}: {'; '.join(errors)}; fetch it by hand "
        f"({known.source}) and put it at {dest}"
    )


def resolve(targets: list[str], conf_dir: Path | None = None) -> tuple[Release, Path]:
    """The release and destination named by Hydra overrides (`model=…`, `model.checkpoint=…`,
    `paths.checkpoint_dir=…`) or by an upstream file name."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from rnsf.utils.cli import CONF_DIR

    overrides = [a for a in targets if "=" in a]
    names = [a for a in targets if "=" not in a]
    if len(names) > 1 or (names and any(o.startswith("model=") for o in overrides)):
        raise UserError(f"name one checkpoint, got {targets}")
    try:
        with initialize_config_dir(str(conf_dir or CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        if names:
            file = names[0]
            dest = Path(cfg.paths.checkpoint_dir) / file
        else:
            file = cfg.model.get("release")
            dest = Path(cfg.model.checkpoint) if file else None
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(str(err).strip().splitlines()[0]) from None
    if file is None:
        raise UserError(
            f"model {cfg.model.name} has no checkpoint to download; pick a pretrained preset "
            f"(model=adm_imagenet256, …) or a file: {', '.join(RELEASES)}"
        )
    if file not in RELEASES:
        raise UserError(f"unknown checkpoint {file!r}; known: {', '.join(RELEASES)}")
    return RELEASES[file], dest


def fetch_hub(targets: list[str]) -> Path:
    """Fetch the diffusers model of `model=diffusers model.path=ID` into the Hugging Face cache
    (where jobs read it offline); a local folder is only checked."""
    from hydra import compose, initialize_config_dir
    from omegaconf.errors import OmegaConfBaseException

    from rnsf.denoisers import hub
    from rnsf.utils.cli import CONF_DIR

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            model = compose("config", overrides=[t for t in targets if "=" in t]).model
        path, revision = str(model.path), model.revision
    except OmegaConfBaseException:
        raise UserError("name the model: model=diffusers model.path=OWNER/NAME") from None
    folder = hub.resolve(path, revision, download=True)
    hub.model_folders(folder)  # a UNet2DModel is there
    return folder


def resolve_all(targets: list[str], conf_dir: Path | None = None) -> list[tuple[Release, Path]]:
    """`resolve`, plus the classifier of a preset that guides with one (`model.classifier`,
    unless `model.classifier_scale=0`)."""
    found = [resolve(targets, conf_dir)]
    if not any(t.startswith("model=") for t in targets):
        return found
    from hydra import compose, initialize_config_dir

    from rnsf.utils.cli import CONF_DIR

    with initialize_config_dir(str(conf_dir or CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[t for t in targets if "=" in t])
    guide = cfg.model.get("classifier")
    if guide is not None and cfg.model.get("classifier_scale"):
        if guide.release not in RELEASES:
            raise UserError(f"unknown classifier {guide.release!r}; known: {', '.join(RELEASES)}")
        found.append((RELEASES[guide.release], Path(guide.checkpoint)))
    return found


def main(argv: list[str] | None = None) -> None:
    from rnsf.utils.cli import fail

    parser = argparse.ArgumentParser(
        prog="python -m rnsf.download", description=__doc__.splitlines()[0]
    )
    parser.add_argument("targets", nargs="*", help="model=PRESET [key=value …] or a file name")
    parser.add_argument("--list", action="store_true", help="list the known checkpoints")
    parser.add_argument("--url", help="download from this address instead (e.g. a mirror)")
    parser.add_argument("--force", action="store_true", help="download even if the file exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.list or not args.targets:
        for r in RELEASES.values():
            size = f"{r.num_bytes:,} bytes" if r.num_bytes else r.size
            digest = f"sha256 {r.sha256}" if r.sha256 else f"md5 {r.md5}" if r.md5 else "-"
            print(f"{r.file}\t{size}\t{digest}\t{r.url}")
        return
    try:
        if "model=diffusers" in args.targets:
            print(fetch_hub(args.targets))
            return
        found = resolve_all(args.targets)
        if args.url and len(found) > 1:  # --url names one file: the network's
            rest = ", ".join(known.file for known, _ in found[1:])
            print(f"--url fetches the network only; fetch {rest} separately", file=sys.stderr)
            found = found[:1]
        for known, dest in found:
            urls = [args.url] if args.url else None
            path = download(known, dest, urls, args.force, not args.quiet)
            print(f"{path} ({path.stat().st_size:,} bytes)")
    except UserError as err:
        fail(str(err))


if __name__ == "__main__":
    main()
