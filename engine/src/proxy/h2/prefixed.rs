//! A plain connection whose first bytes were already read (to see whether they are the
//! HTTP/2 preface, h2c with prior knowledge): those bytes are read again first.

use std::io;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

pub struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Prefixed {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl AsyncReadRent for Prefixed {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.pos < self.prefix.len() {
            let n = buf.bytes_total().min(self.prefix.len() - self.pos);
            // SAFETY: n bytes fit in the buffer from write_ptr.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.prefix.as_ptr().add(self.pos),
                    buf.write_ptr(),
                    n,
                );
                buf.set_init(n);
            }
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return (Ok(n), buf);
        }
        self.inner.read(buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        if self.pos < self.prefix.len() {
            return (
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "readv with a prefix",
                )),
                buf,
            );
        }
        self.inner.readv(buf).await
    }
}

impl AsyncWriteRent for Prefixed {
    fn write<T: IoBuf>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.inner.write(buf)
    }

    fn writev<T: IoVecBuf>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.inner.writev(buf)
    }

    fn flush(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        self.inner.flush()
    }

    fn shutdown(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        self.inner.shutdown()
    }
}
