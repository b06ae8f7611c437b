"""The orchestrator: spec → data → models → (training) → mining → analyses → store → site.

Reads top-down like mkdocs' build(): plan (every name in the spec checked against the untrained
models), gather inputs, compute what the store does not already hold (each checkpoint entry keyed
by a content hash), then render. No exit codes here; user errors are raised as SitegenError
subclasses.

Modules, in pipeline order:

- :mod:`.pipeline`: :func:`build` itself, planning apart from execution, and the build record;
- :mod:`.devices`: the device, the architectures, layer tables for ``sitegen layers``;
- :mod:`.dataset`: a dataset's card and the probe images the pages show;
- :mod:`.network`: one network's checkpoints, entries (computed or cached) and record;
- :mod:`.names`: which checkpoints and units the entries cover, checked against the spec;
- :mod:`.keys`: the cache keys of entries and analysis documents;
- :mod:`.analyze`: one checkpoint entry: check, mine, walk the layers, analyse, write the manifest;
- :mod:`.mining`: the probe set mined for an entry, or a killed build's tables reloaded;
- :mod:`.sprites`: one layer's patch and reconstruction sprites;
- :mod:`.techniques`: the registered analyses of a checkpoint; :mod:`.refresh`: rerun changed ones;
- :mod:`.resume`: resuming inside an entry a killed build left; :mod:`.write`: entry files.
"""

from sitegen.build.dataset import grayscale
from sitegen.build.devices import layer_table_for, resolve_device
from sitegen.build.pipeline import BuildResult, build

__all__ = ["build", "BuildResult", "resolve_device", "layer_table_for", "grayscale"]
