//! Verification: walks a tenant's events and chain side by side from the
//! first event and recomputes every hash from the events table.
//!
//! Both are read in position order and matched by position. Each link must
//! chain to the link before it (`prev_hash`), name the same event id, and
//! carry `SHA-256(prev_hash || canonical_bytes(event))`. The first link that
//! does not is reported and the walk of that tenant stops: every later hash
//! depends on it. Events past the last link are not sealed yet and are
//! only counted.
use std::collections::VecDeque;
use std::fmt;

use buktor_domain::TenantId;
use uuid::Uuid;

use super::{link_hash, AuditError, AuditLog, ChainLink, Digest32, GENESIS};
use crate::store::{Position, RecordedEvent};

/// Rows fetched per round trip, of events and of links.
const PAGE: usize = 1000;

/// What is wrong at the first broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The event's recomputed hash differs from the stored one: the event
    /// (or the link's hash) was changed after it was sealed.
    HashMismatch {
        expected: Digest32,
        stored: Digest32,
    },
    /// The link's `prev_hash` is not the previous link's hash: the chain
    /// table was changed.
    PrevHashMismatch {
        expected: Digest32,
        stored: Digest32,
    },
    /// The link and the event at this position have different ids.
    EventIdMismatch { chain: Uuid, event: Uuid },
    /// An event before the chain's head has no link: it was inserted after
    /// sealing (or its link removed).
    EventMissingFromChain,
    /// The chain has a link for an event that is no longer stored.
    EventMissing,
}

/// The first link of a tenant's chain that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub tenant: TenantId,
    pub position: Position,
    pub event_id: Uuid,
    pub what: Break,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {} BROKEN at position {} (event {}): ",
            self.tenant, self.position, self.event_id
        )?;
        match &self.what {
            Break::HashMismatch { expected, stored } => write!(
                f,
                "the event does not match its seal: recomputed hash {expected}, stored hash {stored}"
            ),
            Break::PrevHashMismatch { expected, stored } => write!(
                f,
                "the link does not chain to the one before it: expected prev_hash {expected}, stored prev_hash {stored}"
            ),
            Break::EventIdMismatch { chain, event } => write!(
                f,
                "the chain sealed event {chain} here, the events table has {event}"
            ),
            Break::EventMissingFromChain => f.write_str(
                "the event is missing from the chain (it was stored after later events were sealed)",
            ),
            Break::EventMissing => {
                f.write_str("the chain has a link for an event that is missing from the events table")
            }
        }
    }
}

/// The outcome for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReport {
    pub tenant: TenantId,
    /// Events whose links were checked and hold (up to a break).
    pub verified: u64,
    /// Events past the chain's head.
    pub unsealed: u64,
    /// The last link checked: an auditor keeps this to detect a rewritten
    /// chain later.
    pub head: Option<(Position, Digest32)>,
    pub broken: Option<BrokenLink>,
}

impl fmt::Display for TenantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(broken) = &self.broken {
            return write!(f, "{broken} ({} events verified before it)", self.verified);
        }
        write!(
            f,
            "tenant {} OK: {} events verified, {} not yet sealed",
            self.tenant, self.verified, self.unsealed
        )?;
        match &self.head {
            Some((position, hash)) => write!(f, ", head {position} {hash}"),
            None => f.write_str(", empty chain"),
        }
    }
}

/// Verifies `tenant`'s chain, or every tenant's (with events) if `None`.
pub async fn verify(
    log: &dyn AuditLog,
    tenant: Option<TenantId>,
) -> Result<Vec<TenantReport>, AuditError> {
    let tenants = match tenant {
        Some(t) => vec![t],
        None => log.event_tenants().await?,
    };
    let mut reports = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        reports.push(verify_tenant(log, tenant).await?);
    }
    Ok(reports)
}

async fn verify_tenant(log: &dyn AuditLog, tenant: TenantId) -> Result<TenantReport, AuditError> {
    let mut report = TenantReport {
        tenant,
        verified: 0,
        unsealed: 0,
        head: None,
        broken: None,
    };
    let mut walk = Walk::new(log, tenant);
    let mut prev = GENESIS;
    let broken = |position, event_id, what| BrokenLink {
        tenant,
        position,
        event_id,
        what,
    };
    while let Some(step) = walk.next().await? {
        match step {
            Step::Sealed(event, link) => {
                let what = if link.prev_hash != prev {
                    Some(Break::PrevHashMismatch {
                        expected: prev,
                        stored: link.prev_hash,
                    })
                } else if link.event_id != event.event_id {
                    Some(Break::EventIdMismatch {
                        chain: link.event_id,
                        event: event.event_id,
                    })
                } else {
                    let expected = link_hash(&prev, &event);
                    (expected != link.hash).then_some(Break::HashMismatch {
                        expected,
                        stored: link.hash,
                    })
                };
                if let Some(what) = what {
                    report.broken = Some(broken(event.position, event.event_id, what));
                    break;
                }
                prev = link.hash;
                report.verified += 1;
                report.head = Some((link.position, link.hash));
            }
            Step::Unsealed(event) => {
                if walk.links_remain() {
                    report.broken = Some(broken(
                        event.position,
                        event.event_id,
                        Break::EventMissingFromChain,
                    ));
                    break;
                }
                report.unsealed += 1;
            }
            Step::Orphan(link) => {
                report.broken = Some(broken(link.position, link.event_id, Break::EventMissing));
                break;
            }
        }
    }
    Ok(report)
}

/// One position of a merged walk over events and links.
pub(crate) enum Step {
    Sealed(RecordedEvent, ChainLink),
    /// An event without a link.
    Unsealed(RecordedEvent),
    /// A link without an event.
    Orphan(ChainLink),
}

/// Events (`read_all`) and links (`chain_links`) of one tenant, paged,
/// merged by position.
pub(crate) struct Walk<'a> {
    log: &'a dyn AuditLog,
    tenant: TenantId,
    events: VecDeque<RecordedEvent>,
    events_after: Position,
    events_done: bool,
    links: VecDeque<ChainLink>,
    links_after: Position,
    links_done: bool,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(log: &'a dyn AuditLog, tenant: TenantId) -> Self {
        Walk {
            log,
            tenant,
            events: VecDeque::new(),
            events_after: Position::START,
            events_done: false,
            links: VecDeque::new(),
            links_after: Position::START,
            links_done: false,
        }
    }

    /// Whether a link follows (valid right after [`Walk::next`], which has
    /// filled the buffers).
    fn links_remain(&self) -> bool {
        !self.links.is_empty()
    }

    pub(crate) async fn next(&mut self) -> Result<Option<Step>, AuditError> {
        self.fill().await?;
        let step = match (self.events.front(), self.links.front()) {
            (None, None) => return Ok(None),
            (Some(_), None) => Step::Unsealed(self.pop_event()),
            (None, Some(_)) => Step::Orphan(self.pop_link()),
            (Some(e), Some(l)) => match e.position.cmp(&l.position) {
                std::cmp::Ordering::Less => Step::Unsealed(self.pop_event()),
                std::cmp::Ordering::Greater => Step::Orphan(self.pop_link()),
                std::cmp::Ordering::Equal => {
                    let event = self.pop_event();
                    Step::Sealed(event, self.pop_link())
                }
            },
        };
        // Refilled now, so that `links_remain` sees the next page too.
        self.fill().await?;
        Ok(Some(step))
    }

    /// Fetches the next page of whichever side has run empty.
    async fn fill(&mut self) -> Result<(), AuditError> {
        if self.events.is_empty() && !self.events_done {
            let page = self
                .log
                .read_all(self.tenant, self.events_after, PAGE)
                .await?;
            self.events_done = page.len() < PAGE;
            if let Some(last) = page.last() {
                self.events_after = last.position;
            }
            self.events.extend(page);
        }
        if self.links.is_empty() && !self.links_done {
            let page = self
                .log
                .chain_links(self.tenant, self.links_after, PAGE)
                .await?;
            self.links_done = page.len() < PAGE;
            if let Some(last) = page.last() {
                self.links_after = last.position;
            }
            self.links.extend(page);
        }
        Ok(())
    }

    fn pop_event(&mut self) -> RecordedEvent {
        self.events.pop_front().expect("checked non-empty")
    }

    fn pop_link(&mut self) -> ChainLink {
        self.links.pop_front().expect("checked non-empty")
    }
}
