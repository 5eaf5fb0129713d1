"""nodes/ of a core.psql_dos profile (a real PostgreSQL server from the Debian packages, a real
AiiDA) through a real mount: the same trees and bytes as AiiDA's, by pk, uuid and prefix; a node
stored after mounting appears."""

from __future__ import annotations

import os
from typing import Any

from tests.views.conftest import Profile
from tests.views.test_views_mount import walk


def test_psql_profile_through_the_mount(mount: Any, make_psql_profile: Any) -> None:
    profile: Profile = make_psql_profile()
    assert str(profile.database).startswith("postgresql://")
    m = mount(profile.container, f"aiida_db={profile.database}")
    nodes = m.path / "nodes"
    assert sorted(int(p) for p in os.listdir(nodes / "by-pk")) == sorted(
        n["pk"] for n in profile.nodes)
    assert sorted(os.listdir(nodes / "by-uuid")) == sorted(n["uuid"] for n in profile.nodes)
    for node in profile.nodes:
        assert walk(nodes / "by-pk" / str(node["pk"])) == node["tree"]
        assert walk(nodes / "by-uuid" / node["uuid"]) == node["tree"]
        assert os.readlink(nodes / "by-uuid" / node["uuid"][:9]) == node["uuid"]
        assert os.getxattr(nodes / "by-pk" / str(node["pk"]), "user.dosfs.label") == (
            node["label"].encode())
    late = profile.run("add")["nodes"][0]
    assert walk(nodes / "by-uuid" / late["uuid"]) == late["tree"]
    assert str(late["pk"]) in os.listdir(nodes / "by-pk")
