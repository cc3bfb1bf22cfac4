"""Triton GPU kernels behind ``geodepth.ops`` (they also run on CPU under ``TRITON_INTERPRET=1``).

Every kernel is declared ``@triton.jit(do_not_specialize=SIZES)``. Triton compiles a variant of a
kernel for each pattern of its integer arguments being 1 or divisible by 16 (and of its pointers
being 16-byte aligned). Cloud sizes and grid dimensions change from frame to frame, so without
this a stream of LiDAR frames would meet a new pattern now and then and stall for a compile
(seconds for the KNN search) long after the first call. Arguments that stay fixed for a model
(channels, ``k``, image size, chunk lengths that are multiples of 16) keep their specialization,
and the kernels' internal buffers are laid out 16-byte aligned for every size.
"""

#: integer kernel arguments that change from call to call: point and query counts, batch
#: counts, grid dimensions (and the KNN ring cap that follows from them), level-2 chunk counts,
#: row strides and offsets of padded buffers, cell-table sizes
SIZES = ("M", "N", "n", "m", "NB", "GX", "GY", "GZ", "G3", "NCH", "stride", "ring_cap", "npad", "ncap",
         "min_chunk", "log_nb")
