"""A hypothesis state machine: writes, packing, cleaning, deleting and repacking in any order
always agree with a dict model, and the container always validates."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dosfs import Container, NotExistent

contents = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(1, 3000)),
)


class ContainerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="dosfs-sm-", dir="/tmp"))
        self.c = Container(self.tmp / "c")
        self.c.init_container(pack_size_target=4000)
        self.model: dict[str, bytes] = {}

    def teardown(self) -> None:
        self.c.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _add(self, key: str, data: bytes) -> None:
        assert key == hashlib.sha256(data).hexdigest()
        self.model[key] = data

    @rule(data=contents)
    def add_loose(self, data: bytes) -> None:
        self._add(self.c.add_object(data), data)

    @rule(data=contents, cut=st.integers(0, 50))
    def add_staged_out_of_order(self, data: bytes, cut: int) -> None:
        s = self.c.new_staged_object()
        cut = min(cut, len(data))
        s.pwrite(data[cut:], cut)
        s.pwrite(data[:cut], 0)
        self._add(s.commit(), data)

    @rule(batch=st.lists(contents, max_size=6), compress=st.sampled_from([False, True, "auto"]))
    def add_to_pack(self, batch: list[bytes], compress: object) -> None:
        for key, data in zip(
            self.c.add_objects_to_pack(batch, compress=compress), batch, strict=True
        ):
            self._add(key, data)

    @rule(compress=st.sampled_from([False, True, "auto"]), clean=st.booleans())
    def pack(self, compress: object, clean: bool) -> None:
        self.c.pack_all_loose(compress=compress, clean_loose_per_pack=clean)

    @rule()
    def clean(self) -> None:
        self.c.clean_storage()

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        keys = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=3, unique=True))
        assert sorted(self.c.delete_objects(keys)) == sorted(keys)
        for k in keys:
            del self.model[k]

    @rule(mode=st.sampled_from(["keep", "yes", "no", "auto"]))
    def repack(self, mode: str) -> None:
        self.c.repack(compress_mode=mode)

    @invariant()
    def agrees_with_model(self) -> None:
        assert list(self.c.iter_hashkeys()) == sorted(self.model)
        assert self.c.get_objects_content(list(self.model)) == self.model
        for key, data in list(self.model.items())[:5]:
            assert self.c.get_object_content(key) == data
            assert self.c.get_object_meta(key).size == len(data)
        try:
            self.c.get_object_content("0" * 64)
        except NotExistent:
            pass
        else:  # pragma: no cover
            raise AssertionError("phantom object")

    @invariant()
    def check_valid(self) -> None:
        report = self.c.validate_report()
        assert report.is_valid(), report.summary()


ContainerModel.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
TestContainerModel = ContainerModel.TestCase


def test_validate_after_random_history() -> None:
    """One longer deterministic run, validated at the end."""
    machine = ContainerModel()
    try:
        for i in range(30):
            machine.add_loose(b"x%d" % i * (i + 1))
            if i % 7 == 0:
                machine.pack(True, i % 2 == 0)
            if i % 11 == 0:
                machine.repack("keep")
        machine.agrees_with_model()
        machine.check_valid()
    finally:
        machine.teardown()
