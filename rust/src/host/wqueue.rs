//! One connection's write queue on the host: the frames waiting for the
//! socket, in order, how much of each is written, and the unwritten total
//! the scheduler is told about.
//!
//! A task resolved before its frame is fully written is withdrawn: a frame
//! none of which was written leaves the queue at once (the daemon never
//! sees it); one partly written must still be completed on the wire, or
//! the byte stream would no longer parse, so its rest is replaced by zero
//! bytes written from a static buffer and the frame's memory is released at
//! once. The head of the frame (transport prefix, hop count, envelope) is
//! kept if any of it is unwritten, so the daemon always reads a whole Task
//! envelope with the right id; its payload then ends in a zero byte rather
//! than `frame::TASK_WHOLE`, and the daemon answers it with an error
//! instead of evaluating it (see `frame::task_payload`). All of this is
//! below the stream layer, so it is the same for Unix sockets, TCP, TLS
//! and WebSocket streams.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;

/// Filler is written from here, at most this many bytes per write.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Task ids start at 1: 0 marks a frame that belongs to no task.
pub const NO_TASK: u64 = 0;

struct Item {
    buf: Rc<Vec<u8>>,
    /// Bytes of `buf` already written.
    off: usize,
    /// Zero bytes to write after `buf`: the rest of a withdrawn frame.
    zeros: u64,
    /// The task this frame (or a broadcast's shared tail) belongs to.
    task: u64,
    /// The rest of a frame whose start was queued separately (a
    /// broadcast's shared tail): once it is at the front, the frame has
    /// started on the wire.
    tail: bool,
    /// Filler already: the task was withdrawn.
    cut: bool,
}

impl Item {
    fn left(&self) -> u64 {
        (self.buf.len() - self.off) as u64 + self.zeros
    }

    /// Some of its frame is on the wire: the rest must follow.
    fn started(&self) -> bool {
        self.off > 0 || self.tail || self.cut
    }
}

/// What withdrawing a task's frame did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// None of it had been written: it is gone from the queue.
    Unsent,
    /// Part of it had been written: the rest is now filler.
    Cut,
    /// Not in the queue: fully written already (or never queued).
    NotQueued,
}

pub struct WriteQueue {
    items: VecDeque<Item>,
    /// Bytes queued and not yet taken by the stream.
    unwritten: u64,
    /// `unwritten` as last returned by `take_change`; None once a frame was
    /// queued since (the scheduler counts a frame sent as unwritten until
    /// told otherwise, so the next figure must be reported even if equal).
    reported: Option<u64>,
}

impl Default for WriteQueue {
    fn default() -> Self {
        WriteQueue { items: VecDeque::new(), unwritten: 0, reported: Some(0) }
    }
}

impl WriteQueue {
    /// Queues a frame: `task`'s, or `NO_TASK`.
    pub fn push(&mut self, buf: Rc<Vec<u8>>, task: u64) {
        self.unwritten += buf.len() as u64;
        self.reported = None;
        self.items.push_back(Item { buf, off: 0, zeros: 0, task, tail: false, cut: false });
    }

    /// Queues the rest of `task`'s frame, right after its start.
    pub fn push_tail(&mut self, buf: Rc<Vec<u8>>, task: u64) {
        self.unwritten += buf.len() as u64;
        self.reported = None;
        self.items.push_back(Item { buf, off: 0, zeros: 0, task, tail: true, cut: false });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn unwritten(&self) -> u64 {
        self.unwritten
    }

    /// The unwritten total if it changed, or a frame was queued, since the
    /// last call.
    pub fn take_change(&mut self) -> Option<u64> {
        (self.reported != Some(self.unwritten)).then(|| {
            self.reported = Some(self.unwritten);
            self.unwritten
        })
    }

    /// Writes as much as `w` takes; `Ok` also when it would block. `Err`
    /// means the peer is gone.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        while let Some(it) = self.items.front_mut() {
            let res = if it.off < it.buf.len() {
                w.write(&it.buf[it.off..])
            } else if it.zeros > 0 {
                w.write(&ZEROS[..it.zeros.min(ZEROS.len() as u64) as usize])
            } else {
                self.items.pop_front();
                continue;
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let from_buf = n.min(it.buf.len() - it.off);
                    it.off += from_buf;
                    it.zeros -= (n - from_buf) as u64;
                    self.unwritten -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Withdraws `task`'s frame (see the module docs). `head_len` gives the
    /// length of the head of a task frame from its first bytes: the part
    /// kept exact when the rest becomes filler.
    pub fn withdraw(&mut self, task: u64, head_len: impl Fn(&[u8]) -> usize) -> Withdrawn {
        let Some(first) = self.items.iter().position(|it| it.task == task) else {
            return Withdrawn::NotQueued;
        };
        if self.items[first].cut {
            return Withdrawn::Cut;
        }
        // A task's items are adjacent: its frame, then a broadcast's tail.
        let end = first + self.items.iter().skip(first).take_while(|it| it.task == task).count();
        // Only the front item can be partly written; a tail at the front
        // (or anywhere: its start is no longer queued) follows a written head.
        let started = self.items[first].started();
        let left: u64 = self.items.range(first..end).map(Item::left).sum();
        let filler = started.then(|| {
            let it = &self.items[first];
            let head = if it.tail { 0 } else { head_len(&it.buf).min(it.buf.len()) };
            let keep = if it.off < head { it.buf[it.off..head].to_vec() } else { Vec::new() };
            let zeros = left - keep.len() as u64;
            Item { buf: Rc::new(keep), off: 0, zeros, task, tail: false, cut: true }
        });
        self.items.drain(first..end);
        match filler {
            Some(f) => {
                self.items.insert(first, f);
                Withdrawn::Cut
            }
            None => {
                self.unwritten -= left;
                Withdrawn::Unsent
            }
        }
    }

    /// Drops every frame not yet started and turns a partly written one
    /// into filler, so that a final message (Exit) can follow at once.
    pub fn discard_unstarted(&mut self, head_len: impl Fn(&[u8]) -> usize) {
        let started = self.items.front().filter(|it| it.started()).map(|it| it.task);
        if let Some(task) = started.filter(|&t| t != NO_TASK) {
            self.withdraw(task, &head_len);
        }
        let keep = started.is_some() as usize;
        for it in self.items.drain(keep..) {
            self.unwritten -= it.left();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that takes at most `room` bytes, then would block.
    struct Sink {
        out: Vec<u8>,
        room: usize,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.out.extend_from_slice(&b[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(fill: u8, len: usize) -> Rc<Vec<u8>> {
        Rc::new(vec![fill; len])
    }

    const HEAD: usize = 4;
    fn head(_: &[u8]) -> usize {
        HEAD
    }

    #[test]
    fn flush_writes_in_order_and_counts_what_is_left() {
        let mut q = WriteQueue::default();
        q.push(frame(1, 10), 1);
        q.push(frame(2, 5), NO_TASK);
        assert_eq!(q.take_change(), Some(15));
        assert_eq!(q.take_change(), None);
        let mut s = Sink { out: Vec::new(), room: 12 };
        q.flush(&mut s).unwrap();
        assert_eq!(s.out, [vec![1; 10], vec![2; 2]].concat());
        assert_eq!(q.unwritten(), 3);
        assert_eq!(q.take_change(), Some(3));
        s.room = 100;
        q.flush(&mut s).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.unwritten(), 0);
        assert_eq!(q.take_change(), Some(0));
        // A frame written at once leaves the total as it was, but is still
        // reported: the scheduler counts it until told.
        q.push(frame(3, 4), 2);
        q.flush(&mut s).unwrap();
        assert_eq!(q.take_change(), Some(0));
        assert_eq!(q.take_change(), None);
    }

    #[test]
    fn an_unstarted_frame_leaves_the_queue_and_its_memory_is_released() {
        let mut q = WriteQueue::default();
        let (a, b) = (frame(1, 10), frame(2, 20));
        q.push(a.clone(), 1);
        q.push(b.clone(), 2);
        q.push(frame(3, 3), 3);
        let mut s = Sink { out: Vec::new(), room: 4 };
        q.flush(&mut s).unwrap();
        assert_eq!(q.withdraw(2, head), Withdrawn::Unsent);
        assert_eq!(Rc::strong_count(&b), 1);
        assert_eq!(q.unwritten(), 6 + 3);
        assert_eq!(q.withdraw(2, head), Withdrawn::NotQueued);
        s.room = 100;
        q.flush(&mut s).unwrap();
        assert_eq!(s.out, [vec![1; 10], vec![3; 3]].concat());
    }

    #[test]
    fn a_partly_written_frame_is_completed_with_filler_keeping_its_head() {
        for written in [2, HEAD, 7] {
            let mut q = WriteQueue::default();
            let f = Rc::new((1..=12u8).collect::<Vec<u8>>());
            q.push(f.clone(), 1);
            q.push(frame(9, 3), NO_TASK);
            let mut s = Sink { out: Vec::new(), room: written };
            q.flush(&mut s).unwrap();
            assert_eq!(q.withdraw(1, head), Withdrawn::Cut);
            assert_eq!(Rc::strong_count(&f), 1, "the frame is released");
            // Same length on the wire: the next frame still parses.
            assert_eq!(q.unwritten(), 12 - written as u64 + 3);
            s.room = 100;
            q.flush(&mut s).unwrap();
            let mut want: Vec<u8> = (1..=(written.max(HEAD) as u8)).collect();
            want.resize(12, 0);
            want.extend([9, 9, 9]);
            assert_eq!(s.out, want, "written {written}");
            assert_eq!(q.unwritten(), 0);
        }
    }

    #[test]
    fn a_broadcast_frame_and_its_shared_tail_go_together() {
        let tail = frame(7, 50);
        // Unstarted: both parts leave; the tail lives on for other daemons.
        let mut q = WriteQueue::default();
        q.push(frame(1, 6), NO_TASK);
        q.push(frame(2, 8), 5);
        q.push_tail(tail.clone(), 5);
        assert_eq!(q.withdraw(5, head), Withdrawn::Unsent);
        assert_eq!(q.unwritten(), 6);
        assert_eq!(Rc::strong_count(&tail), 1);
        // Started inside the head: head bytes, then zeros for head and tail.
        q.push(frame(2, 8), 6);
        q.push_tail(tail.clone(), 6);
        let mut s = Sink { out: Vec::new(), room: 6 + 2 };
        q.flush(&mut s).unwrap();
        assert_eq!(q.withdraw(6, head), Withdrawn::Cut);
        assert_eq!(Rc::strong_count(&tail), 1);
        assert_eq!(q.unwritten(), 6 + 50);
        // Withdrawing it again changes nothing.
        assert_eq!(q.withdraw(6, head), Withdrawn::Cut);
        assert_eq!(q.unwritten(), 6 + 50);
        s.room = 1000;
        q.flush(&mut s).unwrap();
        assert_eq!(&s.out[6..], [vec![2; 4], vec![0; 4 + 50]].concat());
        // The head fully written, the tail not started: still started.
        let mut q = WriteQueue::default();
        q.push(frame(2, 8), 7);
        q.push_tail(tail.clone(), 7);
        let mut s = Sink { out: Vec::new(), room: 8 };
        q.flush(&mut s).unwrap();
        assert_eq!(q.withdraw(7, head), Withdrawn::Cut);
        s.room = 1000;
        q.flush(&mut s).unwrap();
        assert_eq!(s.out, [vec![2; 8], vec![0; 50]].concat());
        assert_eq!(Rc::strong_count(&tail), 1);
    }

    #[test]
    fn a_large_filler_is_written_in_pieces() {
        let mut q = WriteQueue::default();
        q.push(Rc::new(vec![5; 300_000]), 1);
        let mut s = Sink { out: Vec::new(), room: 1000 };
        q.flush(&mut s).unwrap();
        assert_eq!(q.withdraw(1, head), Withdrawn::Cut);
        s.room = usize::MAX;
        q.flush(&mut s).unwrap();
        assert_eq!(s.out.len(), 300_000);
        assert!(s.out[1000..].iter().all(|&b| b == 0));
        assert!(q.is_empty());
    }

    #[test]
    fn discard_unstarted_keeps_only_what_must_finish() {
        let mut q = WriteQueue::default();
        let big = frame(1, 100);
        q.push(big.clone(), 1);
        q.push(frame(2, 10), 2);
        q.push(frame(3, 10), NO_TASK);
        let mut s = Sink { out: Vec::new(), room: 30 };
        q.flush(&mut s).unwrap();
        q.discard_unstarted(head);
        assert_eq!(Rc::strong_count(&big), 1);
        assert_eq!(q.unwritten(), 70);
        q.push(frame(4, 2), NO_TASK);
        s.room = 1000;
        q.flush(&mut s).unwrap();
        assert_eq!(&s.out[30..], [vec![0; 70], vec![4; 2]].concat());
        // Nothing started: everything goes.
        let mut q = WriteQueue::default();
        q.push(frame(1, 5), 1);
        q.push(frame(2, 5), NO_TASK);
        q.discard_unstarted(head);
        assert!(q.is_empty());
        assert_eq!(q.unwritten(), 0);
    }
}
