//! Packet buffers: one frame in a buffer with headroom in front of it.
//!
//! Encapsulation grows a frame at the front and ICMP replies rewrite it in place, so the pipeline
//! works on buffers that can move their start like a DPDK mbuf (`rte_pktmbuf_prepend` / `_adj` /
//! `_trim`). [`PacketBuf`] is that contract; the DPDK backend implements it over mbufs and
//! [`HeapPacket`] implements it over owned memory for tests and tools.

/// A frame with movable front and back, like a DPDK mbuf.
pub trait PacketBuf {
    /// The frame's bytes, from the first Ethernet byte to the end.
    fn data(&self) -> &[u8];
    /// The frame's bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Free bytes in front of the frame.
    fn headroom(&self) -> usize;
    /// Grows the frame at the front by `len` bytes (their content is unspecified).
    /// Returns false, changing nothing, when the headroom is too small.
    fn prepend(&mut self, len: usize) -> bool;
    /// Removes `len` bytes from the front. Returns false, changing nothing, if the frame is shorter.
    fn adj(&mut self, len: usize) -> bool;
    /// Shortens the frame to `len` bytes; a no-op when it is already that short.
    fn truncate(&mut self, len: usize);
}

/// Moves the start of the frame by `delta` bytes: positive grows it, negative shrinks it.
#[inline]
pub fn resize_front<P: PacketBuf + ?Sized>(packet: &mut P, delta: isize) -> bool {
    if delta >= 0 {
        packet.prepend(delta.unsigned_abs())
    } else {
        packet.adj(delta.unsigned_abs())
    }
}

/// A frame in owned heap memory with fixed headroom and tailroom (tests, pcap tools).
#[derive(Clone, Debug)]
pub struct HeapPacket {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl HeapPacket {
    /// Headroom that fits every encapsulation this crate emits (Ethernet + VLAN + IPv6 + UDP)
    /// with room to spare; DPDK's `RTE_PKTMBUF_HEADROOM` is the same 128 bytes.
    pub const DEFAULT_HEADROOM: usize = 128;

    /// Copies `frame` into a new buffer with `headroom` free bytes in front of it.
    pub fn from_frame(frame: &[u8], headroom: usize) -> HeapPacket {
        let mut buf = vec![0u8; headroom + frame.len()].into_boxed_slice();
        buf[headroom..].copy_from_slice(frame);
        HeapPacket {
            buf,
            start: headroom,
            end: headroom + frame.len(),
        }
    }

    /// Reuses this buffer for `frame` with `headroom` in front, as a driver recycles a buffer
    /// for the next received frame. Returns false, changing nothing, if it does not fit.
    pub fn refill(&mut self, frame: &[u8], headroom: usize) -> bool {
        let Some(end) = headroom
            .checked_add(frame.len())
            .filter(|&end| end <= self.buf.len())
        else {
            return false;
        };
        self.buf[headroom..end].copy_from_slice(frame);
        self.start = headroom;
        self.end = end;
        true
    }

    /// A buffer of `capacity` bytes holding an empty frame, for [`HeapPacket::refill`].
    pub fn with_capacity(capacity: usize) -> HeapPacket {
        HeapPacket {
            buf: vec![0u8; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl PacketBuf for HeapPacket {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.start
    }
    #[inline]
    fn prepend(&mut self, len: usize) -> bool {
        if len > self.start {
            return false;
        }
        self.start -= len;
        true
    }
    #[inline]
    fn adj(&mut self, len: usize) -> bool {
        if len > self.end - self.start {
            return false;
        }
        self.start += len;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        if len < self.end - self.start {
            self.end = self.start + len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_adj_truncate_move_the_window() {
        let mut p = HeapPacket::from_frame(&[1, 2, 3, 4], 2);
        assert!(!p.prepend(3), "only 2 bytes of headroom");
        assert!(p.prepend(2));
        assert_eq!(p.data().len(), 6);
        assert_eq!(&p.data()[2..], &[1, 2, 3, 4]);
        assert!(p.adj(3));
        assert_eq!(p.data(), &[2, 3, 4]);
        assert!(!p.adj(4));
        p.truncate(2);
        assert_eq!(p.data(), &[2, 3]);
        p.truncate(10);
        assert_eq!(p.data(), &[2, 3]);
        assert!(resize_front(&mut p, -1));
        assert_eq!(p.data(), &[3]);
        assert!(resize_front(&mut p, 4));
        assert_eq!(p.data().len(), 5);
    }

    #[test]
    fn refill_reuses_the_buffer() {
        let mut p = HeapPacket::with_capacity(8);
        assert!(p.data().is_empty());
        assert!(p.refill(&[1, 2, 3], 4));
        assert_eq!((p.data(), p.headroom()), (&[1u8, 2, 3][..], 4));
        assert!(!p.refill(&[1, 2, 3, 4, 5], 4), "does not fit");
        assert_eq!(p.data(), &[1, 2, 3], "unchanged after a refusal");
        assert!(!p.refill(&[], usize::MAX));
    }
}
