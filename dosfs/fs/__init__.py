"""The pyfuse3 adapter: maps FUSE requests onto the engine contract (dosfs.engine); no storage
logic here. `dosfs.fs.operations.Operations` is the filesystem; import it from there (this
package's own import loads nothing, so the option parser can read `dosfs.fs.limits` without
pyfuse3)."""
