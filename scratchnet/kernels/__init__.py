"""The kernels floor: patches and their adjoint, the reference convolution, the fast CPU paths,
and the per-device policy that picks among them.  Imports the runtime floor only."""
