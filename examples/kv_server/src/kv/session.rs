//! One connection's own state (its protocol, name and id) and the commands about it:
//! `HELLO`, `CLIENT`, `SELECT`, `QUIT`, `SHUTDOWN`.

use super::command::{arity_error, integer, truncated, unknown_subcommand};
use super::Command;
use crate::resp::{Protocol, Reply};

/// The most commands one `MULTI` block may queue: a client cannot grow a connection's
/// memory without bound by never sending `EXEC`.
pub const MAX_QUEUED: usize = 100_000;

/// The Redis version whose commands and replies this server follows (`HELLO`,
/// `INFO`).
pub const REDIS_VERSION: &str = "7.2.0";

/// `HELLO`'s arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// The protocol asked for (2 or 3); `None` keeps the current one.
    pub protocol: Option<Protocol>,
    /// `AUTH username password`.
    pub auth: Option<(Vec<u8>, Vec<u8>)>,
    /// `SETNAME name`.
    pub name: Option<Vec<u8>>,
}

impl Hello {
    /// Parses the arguments after `HELLO`.
    pub(super) fn parse(args: Vec<Vec<u8>>) -> Result<Hello, Reply> {
        let mut hello = Hello::default();
        let mut args = args.into_iter();
        let Some(version) = args.next() else {
            return Ok(hello);
        };
        hello.protocol = Some(match integer(&version) {
            Ok(2) => Protocol::Resp2,
            Ok(3) => Protocol::Resp3,
            Ok(_) => return Err(Reply::error("NOPROTO unsupported protocol version")),
            Err(_) => {
                return Err(Reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
        });
        while let Some(opt) = args.next() {
            match opt.to_ascii_lowercase().as_slice() {
                b"auth" => match (args.next(), args.next()) {
                    (Some(user), Some(pass)) => hello.auth = Some((user, pass)),
                    _ => return Err(syntax_in_hello(&opt)),
                },
                b"setname" => match args.next() {
                    Some(name) => hello.name = Some(name),
                    None => return Err(syntax_in_hello(&opt)),
                },
                _ => return Err(syntax_in_hello(&opt)),
            }
        }
        Ok(hello)
    }
}

fn syntax_in_hello(opt: &[u8]) -> Reply {
    Reply::error(format!(
        "ERR Syntax error in HELLO option '{}'",
        truncated(opt, 128)
    ))
}

/// `CLIENT` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCommand {
    /// `CLIENT SETNAME name`.
    SetName(Vec<u8>),
    /// `CLIENT GETNAME`.
    GetName,
    /// `CLIENT ID`.
    Id,
    /// `CLIENT SETINFO LIB-NAME | LIB-VER value` (what redis-py sends on connect).
    SetInfo(Vec<u8>, Vec<u8>),
}

impl ClientCommand {
    /// Parses the arguments after `CLIENT`.
    pub(super) fn parse(args: Vec<Vec<u8>>) -> Result<ClientCommand, Reply> {
        let original = args[0].clone();
        let sub = original.to_ascii_lowercase();
        let argc = args.len() + 1;
        let want = |n: usize, name: &str| {
            if argc == n {
                Ok(())
            } else {
                Err(arity_error(name))
            }
        };
        let mut args = args.into_iter().skip(1);
        Ok(match sub.as_slice() {
            b"setname" => {
                want(3, "client|setname")?;
                ClientCommand::SetName(args.next().unwrap_or_default())
            }
            b"getname" => {
                want(2, "client|getname")?;
                ClientCommand::GetName
            }
            b"id" => {
                want(2, "client|id")?;
                ClientCommand::Id
            }
            b"setinfo" => {
                want(4, "client|setinfo")?;
                let attr = args.next().unwrap_or_default();
                if !attr.eq_ignore_ascii_case(b"lib-name") && !attr.eq_ignore_ascii_case(b"lib-ver")
                {
                    return Err(Reply::error(format!(
                        "ERR Unrecognized option '{}'",
                        truncated(&attr, 128)
                    )));
                }
                ClientCommand::SetInfo(attr, args.next().unwrap_or_default())
            }
            _ => return Err(unknown_subcommand(&original, "CLIENT")),
        })
    }
}

/// What the server must do after answering a connection command.
#[derive(Clone, Debug, PartialEq)]
pub enum After {
    /// Keep serving the connection.
    Continue,
    /// Close the connection (`QUIT`).
    Close,
    /// Stop the whole server gracefully, as on SIGTERM (`SHUTDOWN`); nothing is
    /// replied, as in Redis.
    Shutdown,
    /// `EXEC`: run these queued commands as one atomic step and reply the array of
    /// their replies (the reply returned with this is a placeholder), unless a key of
    /// `watched` (key, stamp at WATCH) has another stamp now: then reply a nil array.
    /// Either way the keys are unwatched after.
    Exec(Vec<Command>, Vec<(Vec<u8>, u64)>),
    /// `WATCH`: register these keys with their shards, record their stamps with
    /// [`Session::watching`], then reply.
    Watch(Vec<Vec<u8>>),
    /// Unregister these watched keys (`UNWATCH`, `DISCARD`), then reply.
    Unwatch(Vec<Vec<u8>>),
}

/// One connection's state. **A building block of the `kv_server` example.**
///
/// ```
/// use kv_server::kv::{After, Command, Session};
/// use kv_server::resp::{Protocol, Reply};
/// let args = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
/// let mut session = Session::new(7);
/// let (reply, after) = session.execute(Command::parse(args("HELLO 3 SETNAME app")).unwrap());
/// assert!(matches!(reply, Reply::Map(_)));
/// assert_eq!(after, After::Continue);
/// assert_eq!(session.protocol(), Protocol::Resp3);
/// let (name, _) = session.execute(Command::parse(args("CLIENT GETNAME")).unwrap());
/// assert_eq!(name, Reply::Bulk(b"app".to_vec()));
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    id: u64,
    protocol: Protocol,
    name: Option<Vec<u8>>,
    /// Between `MULTI` and `EXEC`: the commands queued so far.
    queued: Option<Vec<Command>>,
    /// A command inside `MULTI` failed to parse: `EXEC` refuses the whole block.
    queue_failed: bool,
    /// `WATCH`ed keys and their stamps then.
    watching: Vec<(Vec<u8>, u64)>,
}

impl Session {
    /// A new connection's state: RESP2, no name, `CLIENT ID` answers `id`.
    pub fn new(id: u64) -> Session {
        Session {
            id,
            protocol: Protocol::Resp2,
            name: None,
            queued: None,
            queue_failed: false,
            watching: Vec::new(),
        }
    }

    /// Records that `key` is watched, with its stamp at `WATCH`.
    pub fn watching(&mut self, key: Vec<u8>, stamp: u64) {
        self.watching.push((key, stamp));
    }

    /// Forgets every watched key and gives them back (to unregister, e.g. when the
    /// connection closes).
    pub fn take_watched(&mut self) -> Vec<(Vec<u8>, u64)> {
        std::mem::take(&mut self.watching)
    }

    /// Inside `MULTI`, a request is queued instead of run (all but `EXEC`, `DISCARD`,
    /// `MULTI` and `QUIT`, as in Redis): `Ok(+QUEUED)`, or for a request that did not
    /// parse its error (and `EXEC` will refuse the block). Outside `MULTI`, or for
    /// those four, the request comes back to be run.
    ///
    /// ```
    /// use kv_server::kv::{After, Command, Session};
    /// use kv_server::resp::Reply;
    /// let args = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
    /// let mut session = Session::new(1);
    /// session.execute(Command::parse(args("MULTI")).unwrap());
    /// let queued = session.queue(Command::parse(args("SET k v")));
    /// assert_eq!(queued.unwrap(), Reply::Simple("QUEUED".into()));
    /// let Err(Ok(exec)) = session.queue(Command::parse(args("EXEC"))) else { unreachable!() };
    /// let (_, after) = session.execute(exec);
    /// assert!(matches!(after, After::Exec(cmds, _) if cmds.len() == 1));
    /// ```
    pub fn queue(
        &mut self,
        request: Result<Command, Reply>,
    ) -> Result<Reply, Result<Command, Reply>> {
        let Some(queued) = &mut self.queued else {
            return Err(request);
        };
        match request {
            Ok(
                Command::Exec
                | Command::Discard
                | Command::Multi
                | Command::Quit
                | Command::Watch(_),
            ) => Err(request),
            // As in Redis, SHUTDOWN cannot wait for an EXEC.
            Ok(Command::Shutdown) => {
                self.queue_failed = true;
                Ok(Reply::error("ERR Command not allowed inside a transaction"))
            }
            Ok(_) if queued.len() >= MAX_QUEUED => {
                self.queue_failed = true;
                Ok(Reply::error(format!(
                    "ERR MULTI holds at most {MAX_QUEUED} commands"
                )))
            }
            Ok(cmd) => {
                queued.push(cmd);
                Ok(Reply::Simple("QUEUED".into()))
            }
            Err(reply) => {
                self.queue_failed = true;
                Ok(reply)
            }
        }
    }

    /// Whether it is between `MULTI` and `EXEC`/`DISCARD` (queueing commands).
    pub fn in_multi(&self) -> bool {
        self.queued.is_some()
    }

    /// The protocol its replies are written in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Answers a connection command ([`Command::is_connection`]); any other command
    /// is answered with an error.
    pub fn execute(&mut self, cmd: Command) -> (Reply, After) {
        let reply = match cmd {
            Command::Hello(hello) => return (self.hello(hello), After::Continue),
            Command::Client(ClientCommand::SetName(name)) => match check_name(&name) {
                Ok(()) => {
                    self.name = (!name.is_empty()).then_some(name);
                    Reply::ok()
                }
                Err(e) => e,
            },
            Command::Client(ClientCommand::GetName) => {
                self.name.clone().map_or(Reply::Nil, Reply::Bulk)
            }
            Command::Client(ClientCommand::Id) => Reply::Integer(self.id as i64),
            Command::Client(ClientCommand::SetInfo(..)) | Command::Select => Reply::ok(),
            Command::Quit => return (Reply::ok(), After::Close),
            Command::Multi if self.queued.is_some() => {
                Reply::error("ERR MULTI calls can not be nested")
            }
            Command::Multi => {
                self.queued = Some(Vec::new());
                self.queue_failed = false;
                Reply::ok()
            }
            Command::Discard => match self.queued.take() {
                Some(_) => {
                    let keys = self.take_watched().into_iter().map(|(k, _)| k).collect();
                    return (Reply::ok(), After::Unwatch(keys));
                }
                None => Reply::error("ERR DISCARD without MULTI"),
            },
            Command::Watch(_) if self.queued.is_some() => {
                Reply::error("ERR WATCH inside MULTI is not allowed")
            }
            Command::Watch(keys) => {
                let keys = keys.iter().map(|k| k.to_vec()).collect();
                return (Reply::ok(), After::Watch(keys));
            }
            Command::Unwatch => {
                let keys = self.take_watched().into_iter().map(|(k, _)| k).collect();
                return (Reply::ok(), After::Unwatch(keys));
            }
            Command::Exec => match self.queued.take() {
                None => Reply::error("ERR EXEC without MULTI"),
                Some(_) if std::mem::take(&mut self.queue_failed) => {
                    let keys = self.take_watched().into_iter().map(|(k, _)| k).collect();
                    let abort = "EXECABORT Transaction discarded because of previous errors.";
                    return (Reply::error(abort), After::Unwatch(keys));
                }
                Some(commands) => {
                    return (Reply::NilArray, After::Exec(commands, self.take_watched()))
                }
            },
            Command::Shutdown => return (Reply::ok(), After::Shutdown),
            other => Reply::error(format!(
                "ERR '{}' is not a connection command",
                other.name()
            )),
        };
        (reply, After::Continue)
    }

    fn hello(&mut self, hello: Hello) -> Reply {
        if let Some((user, _password)) = &hello.auth {
            // No password is configured: the default user takes any password, as in
            // Redis with its default `nopass` user; no other user exists.
            if user.as_slice() != b"default" {
                return Reply::error(
                    "WRONGPASS invalid username-password pair or user is disabled.",
                );
            }
        }
        if let Some(name) = &hello.name {
            if let Err(e) = check_name(name) {
                return e;
            }
        }
        if let Some(protocol) = hello.protocol {
            self.protocol = protocol;
        }
        if let Some(name) = hello.name {
            self.name = (!name.is_empty()).then_some(name);
        }
        let text = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
        let proto = match self.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        Reply::Map(vec![
            (text("server"), text("redis")),
            (text("version"), text(REDIS_VERSION)),
            (text("proto"), Reply::Integer(proto)),
            (text("id"), Reply::Integer(self.id as i64)),
            (text("mode"), text("standalone")),
            (text("role"), text("master")),
            (text("modules"), Reply::Array(Vec::new())),
        ])
    }
}

/// Redis's rule for client names: printable ASCII without spaces.
fn check_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}
