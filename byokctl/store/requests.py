"""What one request on an org is decided from, read at once: the org, the acting member, the
platform settings and every key that could serve it (SPEC §3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row

# The org's own keys and its member's personal keys (index keys_org_member), then the
# platform's (index keys_slot): every key a resolution may pick, whole (sealed secret
# included), so the key it picks is checked and opened without being read again.
_KEYS = ("SELECT * FROM keys WHERE org = ? AND (scope = 'org' OR (scope = 'member' AND member = ?)) "
         "UNION ALL SELECT * FROM keys WHERE scope = 'platform'")


class RequestRows(NamedTuple):
    """The stored rows a request is decided from (every column, `mac` included)."""

    org: Row | None
    member: Row | None  # the acting member's row in the org (None: the operator, or not one)
    meta: dict[str, str | None]  # the meta values asked for (None where there is none)
    keys: list[Row]


class Requests(Family):
    """What one request on an org is decided from, read at once."""

    def rows(self, org: str, member: str | None, meta: tuple[str, ...]) -> RequestRows:
        """The rows for a request on `org` by `member` (None: the operator) and the `meta`
        values: independent queries, sent together where the engine can (one round trip on
        PostgreSQL)."""
        marks = ", ".join("?" for _ in meta)
        queries = [("SELECT * FROM orgs WHERE slug = ?", (org,)),
                   (f"SELECT key, value FROM meta WHERE key IN ({marks})", meta),  # noqa: S608
                   (_KEYS, (org, member))]
        if member is not None:
            queries.append(("SELECT * FROM members WHERE org = ? AND email = ?", (org, member)))
        found = self.store.batch(queries)
        values = {r[0]: r[1] for r in found[1]}
        return RequestRows(found[0][0] if found[0] else None,
                           found[3][0] if member is not None and found[3] else None,
                           {k: values.get(k) for k in meta}, found[2])
