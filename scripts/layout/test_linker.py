#!/usr/bin/env python3
"""Unit tests of scripts/layout/linker (run by scripts/test.sh): the profile's keys, the
functions read from real objects (cc-built, 64 and 32 bit), the order written, and which links
are ordered at all."""
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
loader = importlib.machinery.SourceFileLoader("linker", os.path.join(HERE, "linker.py"))
spec = importlib.util.spec_from_loader("linker", loader)
linker = importlib.util.module_from_spec(spec)
loader.exec_module(linker)

C = """
void _ZN7tidelet5agent3run17h0123456789abcdefE(void) {}
void _ZN4core3ptr13drop_in_place17hffffffffffffffffE(void) {}
void _ZN4core3ptr13drop_in_place17h0000000000000000E(void) {}
void cold_function(void) {}
static int data_symbol = 3;
int use(void) { return data_symbol; }
"""


class Linker(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        with open(os.path.join(self.dir, "a.c"), "w") as f:
            f.write(C)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def object(self, *flags):
        out = os.path.join(self.dir, "a.o")
        subprocess.run(["cc", "-c", "-ffunction-sections", *flags, "-o", out,
                        os.path.join(self.dir, "a.c")], check=True)
        return out

    def test_the_key_is_the_demangled_name_without_what_differs_between_builds(self):
        cases = [
            # Legacy mangling (tidelet's crates): without the hash.
            ("_ZN7tidelet5agent3run17h0123456789abcdefE", "tidelet::agent::run"),
            ("_ZN7tidelet5agent3run17hfedcba9876543210E.llvm.42", "tidelet::agent::run"),
            # v0 (std): without the crate disambiguator.
            ("_RNvNtNtCsgEmfK2I1SDS_4core5slice6memchr14memchr_aligned",
             "core::slice::memchr::memchr_aligned"),
            ("_RNvNtNtCs1a2b3c_4core5slice6memchr14memchr_aligned.123",
             "core::slice::memchr::memchr_aligned"),
            # C: as it is.
            ("main", "main"),
        ]
        got = linker.keys([n for n, _ in cases])
        for (name, want), k in zip(cases, got):
            self.assertEqual(k, want, name)

    def test_it_reads_the_functions_of_an_object_and_nothing_else(self):
        names = set(linker.functions(self.object()))
        self.assertIn("_ZN7tidelet5agent3run17h0123456789abcdefE", names)
        self.assertIn("cold_function", names)
        self.assertIn("use", names)
        self.assertNotIn("data_symbol", names)
        # Not an ELF object: nothing.
        bogus = os.path.join(self.dir, "x.o")
        with open(bogus, "wb") as f:
            f.write(b"!<arch>\n")
        self.assertEqual(linker.functions(bogus), [])

    def test_the_order_follows_the_profile_with_every_instance_of_a_key(self):
        obj = self.object()
        profile = os.path.join(self.dir, "hot.txt")
        with open(profile, "w") as f:
            f.write("# comment\ncore::ptr::drop_in_place\ntidelet::agent::run\ngone_since\n")
        linker.PROFILE = profile
        notes = []
        path = linker.order_file([obj], notes.append)
        with open(path) as f:
            order = f.read().split()
        os.unlink(path)
        self.assertEqual(sorted(order[:2]), [
            "_ZN4core3ptr13drop_in_place17h0000000000000000E",
            "_ZN4core3ptr13drop_in_place17hffffffffffffffffE"])
        self.assertEqual(order[2:], ["_ZN7tidelet5agent3run17h0123456789abcdefE"])
        self.assertRegex(notes[0], r"^3 of \d+ functions placed first; 2 of 3 profile keys matched$")
        # Nothing of the profile in the objects, or no profile: unordered.
        with open(profile, "w") as f:
            f.write("only_elsewhere\n")
        self.assertIsNone(linker.order_file([obj], notes.append))
        linker.PROFILE = os.path.join(self.dir, "missing.txt")
        self.assertIsNone(linker.order_file([obj], notes.append))
        self.assertIn("no profile", notes[-1])

    def test_32_bit_objects_are_read_too(self):
        try:
            obj = self.object("-m32")
        except subprocess.CalledProcessError:
            self.skipTest("cc cannot build 32-bit objects here")
        self.assertIn("cold_function", linker.functions(obj))

    def test_only_fat_lto_links_with_lld_are_ordered(self):
        obj = self.object()
        profile = os.path.join(self.dir, "hot.txt")
        with open(profile, "w") as f:
            f.write("cold_function\n")
        env = dict(os.environ, TIDELET_LAYOUT_PROFILE=profile, TIDELET_LINKER="echo",
                   TIDELET_LAYOUT_LOG=os.path.join(self.dir, "log"))
        env.pop("TIDELET_LAYOUT_LLD", None)
        run = lambda *args, **kw: subprocess.run(
            [os.path.join(HERE, "linker"), *args], env=dict(env, **kw), check=True,
            capture_output=True, text=True).stdout
        # An LTO link (one object, no rlibs but compiler_builtins) with lld: ordered.
        out = run(obj, "x.rlib", "-fuse-ld=lld", "-o", "tidelet-1")
        self.assertIn("--symbol-ordering-file=", out)
        # Without lld: as it came, unless lld is asked for (TIDELET_LAYOUT_LLD=1).
        self.assertNotIn("--symbol-ordering-file", run(obj, "-o", "tidelet-1"))
        out = run(obj, "-o", "tidelet-1", TIDELET_LAYOUT_LLD="1")
        self.assertIn("-fuse-ld=lld", out)
        self.assertIn("--symbol-ordering-file=", out)
        # Another binary (the supervisor, a plugin): as it came.
        self.assertNotIn("--symbol-ordering-file",
                         run(obj, "-fuse-ld=lld", "-o", "deps/tidelet_shim-1a"))
        # Many rlibs (a debug link), or an @file: as it came.
        rlibs = [f"{i}.rlib" for i in range(3)]
        self.assertEqual(run(obj, *rlibs, "-fuse-ld=lld", "-o", "t").split(),
                         [obj, *rlibs, "-fuse-ld=lld", "-o", "t"])
        self.assertNotIn("--symbol-ordering-file",
                         run(obj, "@args", "-fuse-ld=lld", "-o", "tidelet-1"))
        with open(os.path.join(self.dir, "log")) as f:
            self.assertIn("tidelet-1: 1 of", f.read())


if __name__ == "__main__":
    unittest.main()
