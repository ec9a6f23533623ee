//! What a loop tells its exception handler when a callback or task panics.

use std::fmt;

/// The context given to a loop's exception handler (asyncio's `context` dict).
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// let lp = shardloop::new_event_loop()?;
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let log = seen.clone();
/// lp.set_exception_handler(move |ctx| log.borrow_mut().push(ctx.panic.clone()));
/// lp.call_soon(|| panic!("boom"))?;
/// lp.stop();
/// lp.run_forever()?;
/// assert_eq!(seen.borrow()[0].as_deref(), Some("boom"));
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExceptionContext {
    /// A sentence saying what happened, e.g. "exception in callback my_crate::f".
    pub message: String,
    /// The panic's message, when a panic is the cause.
    pub panic: Option<String>,
    /// The type name of the callback or future that failed.
    pub callback: Option<&'static str>,
    /// The name of the loop it happened on.
    pub loop_name: String,
}

impl ExceptionContext {
    pub(crate) fn panic(kind: &str, name: &'static str, msg: String, loop_name: &str) -> Self {
        ExceptionContext {
            message: format!("exception in {kind} {name}"),
            panic: Some(msg),
            callback: Some(name),
            loop_name: loop_name.to_string(),
        }
    }
}

impl fmt::Display for ExceptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.loop_name, self.message)?;
        if let Some(p) = &self.panic {
            write!(f, ": {p}")?;
        }
        Ok(())
    }
}

/// What a loop does with an exception when no handler is set: log it at error level.
pub fn default_exception_handler(ctx: &ExceptionContext) {
    log::error!("{ctx}");
}
