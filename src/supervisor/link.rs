//! The one scaffold every device and connector actor runs on: its own arbiter, start and stop,
//! the capped doubling backoff, health reports without repeats, and one `ChildExited` when its
//! work ends by itself, whether with an error or a panic.
//!
//! A child hands [`start`] a setup that builds its work from a [`LinkCtx`] (or hands
//! [`start_actor`] the actix actor that is its work). The work runs as one task on the child's
//! arbiter, so that a panic anywhere in it (a poll loop, a message handler, a future the actor
//! spawned on its context) ends that task and is seen here, with its message. A task spawned
//! apart from the work (`actix::spawn`: one MLLP connection, the relay's command worker) is not
//! part of it: a panic there ends only that task. With the `fault-hooks` feature (tests only)
//! the supervisor can make the work panic from inside (`Running::inject_panic`).
//!
//! **Invariant:** a child stopped by the supervisor never reports an exit; a child that ends
//! by itself reports exactly one.

use super::{ChildExited, HealthState, ReportHealth, Running, StopFuture, Supervisor};
use actix::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// A child's work: runs on its arbiter until it is asked to stop (then `Ok`) or fails.
pub type Work = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// What a child's work is given when it is built.
pub struct LinkCtx {
    /// Becomes `true` when the supervisor asks the child to stop.
    pub shutdown: watch::Receiver<bool>,
    /// Reports the child's health to the supervisor.
    pub health: Health,
}

/// A health report: the state and the error that explains it.
type Report = (HealthState, Option<String>);

/// Reports a child's health, sending only changes: a poll loop may report the same state on
/// every round without flooding the supervisor or the journal's `gateway.actor_state` events.
#[derive(Clone)]
pub struct Health {
    name: String,
    supervisor: Addr<Supervisor>,
    last: Arc<Mutex<Option<Report>>>,
    exit: Arc<Mutex<Option<String>>>,
}

impl Health {
    /// Reports `state` (`error` explains a degraded one) when it differs from the last report;
    /// true if it did.
    pub fn report(&self, state: HealthState, error: Option<String>) -> bool {
        let now = Some((state, error.clone()));
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return false;
            }
            *last = now;
        }
        self.supervisor.do_send(ReportHealth {
            name: self.name.clone(),
            state,
            error,
        });
        true
    }

    /// Records why the child is ending, for an actor whose work ends when it stops itself: the
    /// supervisor hears it once the work has ended. The first reason recorded is kept.
    pub fn exit(&self, error: impl Into<String>) {
        self.exit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| error.into());
    }
}

/// Delay before attempt `attempt` (1 for the first retry): `initial`, doubling, capped at `max`.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max)
}

/// Sleeps `delay`, cut short when the child is asked to stop; true if it was asked, so that a
/// backoff or a poll interval never holds up a stop.
pub async fn stop_asked_during(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.changed() => true,
    }
}

/// Starts a child on a new arbiter: `setup` runs there and builds the work. Stopping it asks
/// the work to stop through [`LinkCtx::shutdown`], waits up to `grace` for it to end, then
/// stops the arbiter.
pub fn start<F>(
    name: &str,
    supervisor: Addr<Supervisor>,
    grace: Duration,
    setup: F,
) -> Box<dyn Running>
where
    F: FnOnce(LinkCtx) -> Work + Send + 'static,
{
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (ended_tx, ended) = oneshot::channel();
    #[cfg(feature = "fault-hooks")]
    let (fault, fault_rx) = oneshot::channel::<()>();
    let arbiter = Arbiter::new();
    let name = name.to_string();
    let health = Health {
        name: name.clone(),
        supervisor: supervisor.clone(),
        last: Default::default(),
        exit: Default::default(),
    };
    let asked = shutdown_rx.clone();
    let link = LinkCtx {
        shutdown: shutdown_rx,
        health: health.clone(),
    };
    arbiter.spawn(async move {
        // Built inside the task, so that a panic while building is reported like any other.
        let work = async move {
            let work = setup(link);
            #[cfg(feature = "fault-hooks")]
            let work = with_fault(work, fault_rx);
            work.await
        };
        let outcome = tokio::task::spawn_local(work).await;
        let _ = ended_tx.send(());
        if *asked.borrow() {
            return;
        }
        let error = match outcome {
            Ok(Ok(())) => health
                .exit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| "ended without being asked to stop".into()),
            Ok(Err(e)) => e,
            Err(e) => match e.try_into_panic() {
                Ok(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
                Err(e) => format!("cancelled: {e}"),
            },
        };
        supervisor.do_send(ChildExited {
            name,
            error: Some(error),
        });
    });
    Box::new(Link {
        shutdown,
        ended,
        arbiter,
        grace,
        #[cfg(feature = "fault-hooks")]
        fault: Some(fault),
    })
}

/// Starts a child whose work is an actix actor, built by `make` on the child's arbiter; the
/// work ends when the actor stops. An actor that stops because of an error records it first
/// with [`Health::exit`]. The address answers as soon as the actor runs.
pub fn start_actor<A, F>(
    name: &str,
    supervisor: Addr<Supervisor>,
    grace: Duration,
    make: F,
) -> (Box<dyn Running>, Addr<A>)
where
    A: Actor<Context = Context<A>>,
    F: FnOnce(LinkCtx) -> A + Send + 'static,
{
    let (tx, rx) = actix::dev::channel::channel(16);
    let running = start(name, supervisor, grace, move |link| {
        let ctx = Context::with_receiver(rx);
        let actor = make(link);
        Box::pin(async move {
            ctx.into_future(actor).await;
            Ok(())
        })
    });
    (running, Addr::new(tx))
}

/// A panic's message, as `panic!` formatted it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// The work, made to panic from inside when the test API asks.
#[cfg(feature = "fault-hooks")]
fn with_fault(work: Work, fault: oneshot::Receiver<()>) -> Work {
    Box::pin(async move {
        tokio::select! {
            r = work => r,
            Ok(()) = fault => panic!("fault injected through the test API"),
        }
    })
}

/// A started child, as the supervisor holds it.
struct Link {
    shutdown: watch::Sender<bool>,
    ended: oneshot::Receiver<()>,
    arbiter: Arbiter,
    grace: Duration,
    #[cfg(feature = "fault-hooks")]
    fault: Option<oneshot::Sender<()>>,
}

impl Running for Link {
    fn stop(self: Box<Self>) -> StopFuture {
        Box::pin(async move {
            let _ = self.shutdown.send(true);
            let _ = tokio::time::timeout(self.grace, self.ended).await;
            self.arbiter.stop();
            // Its thread is let finish what it was polling, so that a replacement never runs
            // beside it; bounded, as a blocking call there could hold it.
            let arbiter = self.arbiter;
            let join = tokio::task::spawn_blocking(move || arbiter.join());
            let _ = tokio::time::timeout(Duration::from_secs(2), join).await;
        })
    }

    #[cfg(feature = "fault-hooks")]
    fn inject_panic(&mut self) -> bool {
        self.fault.take().is_some_and(|f| f.send(()).is_ok())
    }
}
