"""Publish a rendered site to a ``gh-pages`` branch, as ``mkdocs gh-deploy`` does (issue 6 item 3).

The commit itself is made by ghp-import (``git fast-import`` straight into the branch, the work
tree is never touched). Around it this package does what ghp-import does not:

- checks every precondition first and ABORTS with a one-line :class:`~sitegen.errors.PublishError`
  naming the fix (mkdocs ``gh_deploy`` logs "not a git repository" and carries on);
- fetches the remote branch first, so a shallow or single-branch clone (CI) builds on top of the
  published history instead of pushing an unrelated root commit that the remote rejects;
- stamps the commit message with the sitegen version and the spec hash as git trailers, and
  refuses to overwrite a deploy made by a newer sitegen unless ``force`` (mkdocs ``_check_version``);
- gives the commit an identity when git has none (ghp-import would commit as ``" <>"``).

The package: :mod:`~sitegen.publish.deploy` (:func:`publish`, the steps in order),
:mod:`~sitegen.publish.git` (the read-only :class:`Git` adapter), :mod:`~sitegen.publish.stamp`
(the commit-message trailers) and ``_checks`` (the preconditions, version check included).

Example:
    >>> result = publish(Path("output/site"), repo_dir=Path("."), cname="atlas.example.org")  # doctest: +SKIP
"""

from __future__ import annotations

from sitegen.publish.deploy import PublishResult, publish
from sitegen.publish.git import Git
from sitegen.publish.stamp import read_stamp, stamp_message

__all__ = ["publish", "PublishResult", "Git", "stamp_message", "read_stamp"]
