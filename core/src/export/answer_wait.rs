//! Tells the uploader's session when an HTTP upload waits for the endpoint's answer, so that
//! [`Profiler::stop_for_exit`](crate::Profiler::stop_for_exit) can return then instead of
//! waiting on the peer. The last connector of every upload's chain (TCP, TLS, Unix socket)
//! wraps the transport; every wait for input on it is a wait for the answer to a request
//! already written, because forkprof sends no `Expect: 100-continue` and uses no proxy.

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};
use ureq::Error;

/// Wraps the transport the connectors before it made.
#[derive(Debug)]
pub(crate) struct AnswerWait;

impl<In: Transport> Connector<In> for AnswerWait {
    type Out = AnswerWaitTransport<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(AnswerWaitTransport))
    }
}

#[derive(Debug)]
pub(crate) struct AnswerWaitTransport<T>(T);

impl<T: Transport> Transport for AnswerWaitTransport<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        self.0.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        let _waiting = super::WaitingOnPeer::new();
        self.0.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}
