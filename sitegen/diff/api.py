"""Entry points: filing a diff into a store (:func:`file_diff`, what a build does per ``diffs:``
entry) and the ``sitegen diff A B`` command (:func:`add_diff`, resolving its references)."""

from __future__ import annotations

from pathlib import Path

from sitegen.diff._load import _entries, _networks_in
from sitegen.diff.files import diff_name, write_diff
from sitegen.diff.stage import diff_stores
from sitegen.diff.types import DiffResult, DiffSide, StoreDiff
from sitegen.errors import DiffError
from sitegen.store import Store
from sitegen.store.manifest import DiffRef


def file_diff(store: Store, a: DiffSide, b: DiffSide) -> tuple[DiffRef, StoreDiff]:
    """Diff ``a`` and ``b`` (:func:`diff_stores`) and write it into ``store`` under :func:`diff_name`.

    What a build does for each of its spec's ``diffs:`` and ``sitegen diff A B`` for its pair.

    Returns:
        The :class:`DiffRef` that lists it in a ``build.json``, and the diff.
    """
    diff = diff_stores(a, b)
    name = diff_name(a, b)
    write_diff(store, name, diff)
    return DiffRef(a=a.ref, b=b.ref, name=name), diff


def _store_of(folder: Path) -> Path | None:
    """The store of an atlas output folder (``<dir>/store``) or the store folder itself."""
    for candidate in (folder / "store", folder):
        if (candidate / "build.json").is_file():
            return candidate
    return None


def is_folder_ref(ref: str) -> bool:
    """True for the ``DIR`` and ``DIR:NETWORK@CHECKPOINT`` forms (an existing folder): no spec needed.

    Example:
        >>> is_folder_ref("alexnet@epoch-1"), is_folder_ref("runs/a"), is_folder_ref("runs/a:alexnet@epoch-1")
        (False, True, True)
    """
    return Path(ref).is_dir() or (":" in ref and Path(ref.rpartition(":")[0]).is_dir())


def resolve_side(ref: str, *, store_root: Path | None = None) -> DiffSide:
    """Turn a command-line reference into a :class:`DiffSide`.

    Accepted forms:

    - ``NETWORK@CHECKPOINT`` (or ``NETWORK``: its last checkpoint with a store entry) in ``store_root``
      (the spec's ``output/store``);
    - ``DIR``: an atlas output folder (holding ``store/``) or a store folder, with one network: its
      last checkpoint with a store entry;
    - ``DIR:NETWORK@CHECKPOINT`` (or ``DIR:NETWORK``) for a folder with several networks.

    Raises:
        DiffError: malformed reference, no such folder, network or store entry.
    """
    folder, pick = None, ref
    if Path(ref).is_dir():
        folder, pick = Path(ref), ""
    elif is_folder_ref(ref):
        head, _, pick = ref.rpartition(":")
        folder = Path(head)
    if folder is not None:
        root = _store_of(folder)
        if root is None:
            raise DiffError(f"{folder}: not an atlas output folder (no store/build.json); build it first")
    elif store_root is None:
        raise DiffError(f"{ref!r}: no such folder; NETWORK@CHECKPOINT refs need a spec (its output/store)")
    else:
        root = Path(store_root)
    store = Store(root)
    network, _, checkpoint = pick.partition("@")
    if not network:
        nets = store.read_build().networks
        if len(nets) != 1:
            raise DiffError(f"{folder}: holds networks {nets}; name one as {folder}:NETWORK@CHECKPOINT")
        network = nets[0]
    if not (store.network_dir(network) / "network.json").is_file():
        raise DiffError(f"{ref!r}: no network {network!r} in {root}; it has {_networks_in(store)}")
    if not checkpoint:
        entries = _entries(store, store.read_network(network))
        if not entries:
            raise DiffError(f"{ref!r}: {network} has no checkpoint with a store entry in {root}")
        checkpoint = entries[-1]
    return DiffSide(root, network, checkpoint)


def add_diff(a: str, b: str, *, store_root: Path | None = None) -> DiffResult:
    """What ``sitegen diff A B`` does: diff two references and file the result in B's store.

    Resolves both references (:func:`resolve_side`), computes :func:`diff_stores`, writes it with
    :func:`write_diff` under :func:`diff_name` into the store of side B (the newer one), and lists it
    in that store's ``build.json`` (replacing a diff of the same name). Re-render that store's site
    (``result.site_dir``) afterwards to see the page.

    Args:
        a: older side: ``NETWORK@CHECKPOINT``, ``DIR`` or ``DIR:NETWORK@CHECKPOINT``.
        b: newer side, the same forms.
        store_root: the store ``NETWORK@CHECKPOINT`` refers to (a spec's ``output/store``).

    Raises:
        DiffError: unresolvable reference or incomparable checkpoints.
        StoreError: B's store has no finished build, or a file is missing.
    """
    sa, sb = resolve_side(a, store_root=store_root), resolve_side(b, store_root=store_root)
    store = Store(sb.store_root)
    ref, result = file_diff(store, sa, sb)
    build = store.read_build()
    refs = [r for r in build.diffs if r.name != ref.name] + [ref]
    store.write_build(build.model_copy(update={"diffs": refs}))
    return DiffResult(store_root=sb.store_root, name=ref.name, diff=result)
