"""Roles and permissions (SPEC §1's table), and the operator's own levers."""

import pytest

from byokctl.domain import roles
from byokctl.errors import ExitCode

TABLE = {  # permission → admin, staffing, interviewer (SPEC §1)
    roles.ORG_VIEW: (True, True, False),
    roles.ORG_MANAGE: (True, False, False),
    roles.KEY_OWN: (True, True, True),
    roles.OPERATOR: (False, False, False),
}


@pytest.mark.parametrize("permission", TABLE)
def test_the_spec_table(permission):
    assert tuple(roles.permits(r, permission) for r in roles.ROLES) == TABLE[permission]


def test_an_unknown_role_or_permission_permits_nothing():
    assert not any(roles.permits("owner", p) for p in TABLE)
    assert not roles.permits("admin", "org:delete")


def test_deny_says_who_and_what():
    e = roles.deny("sam@acme.com", "staffing", roles.ORG_MANAGE, "acme")
    assert e.code == ExitCode.DENIED
    assert e.message == ("sam@acme.com (staffing) may not manage org acme; ask an org admin or the "
                         "platform operator")
    e = roles.deny("sam@acme.com", "admin", roles.OPERATOR, "acme")
    assert "it is the platform operator's alone" in e.message
