# C layout of simkv/kv/block_pool.py's BlockPool in the compiled build (setup.py).

cdef class BlockPool:
    cdef public object capacity, block_size, used, cached, pinned, reclaim, borrow, give_back
    cdef public object reach, borrowed, lent

    cpdef can_allocate(self, n)
    cpdef allocate(self, n)
    cpdef release(self, n)
