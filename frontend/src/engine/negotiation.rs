//! Perfect negotiation for one remote peer (the W3C pattern), as a state machine: events in,
//! [`Step`]s out. No browser inside: the peer adapter runs each operation on the
//! `RTCPeerConnection`, one at a time and in order, and reports back.
//!
//! The W3C code reads `pc.signalingState` synchronously; here the operations run elsewhere, so the
//! machine keeps its own account of what it has asked for:
//! - `making_offer`: an offer is being created and set locally;
//! - `awaiting_answer`: our offer is out and no answer has been applied yet;
//! - `applying_answer`: the answer is queued (W3C's `isSettingRemoteAnswerPending`: from then on a
//!   new remote offer is no collision);
//! - `accepting`: remote offers queued and not yet answered.
//!
//! A remote offer collides when we are making an offer or waiting for an answer to one. The
//! impolite side ignores it; the polite side accepts it, which rolls its own offer back (the
//! browser's implicit rollback) — so an offer of ours that is about to be rolled back is not even
//! sent. Remote candidates that arrive before any remote description are kept and added right
//! after the first one (instead of failing), bounded.

use shared::{IceCandidate, SdpKind, SessionDescription};

/// Most remote candidates kept while no remote description is set.
pub const MAX_EARLY_CANDIDATES: usize = 64;

/// What the machine asks the peer adapter (or the signaling channel) to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create an offer and set it as the local description; report it.
    MakeOffer,
    /// Set this remote offer (rolling back an offer of ours if need be), attach what we send,
    /// create the answer and set it; report it.
    AcceptOffer(SessionDescription),
    /// Set this remote answer; report when done.
    ApplyAnswer(SessionDescription),
    AddCandidate(IceCandidate),
    /// Send our own description to the remote peer.
    Send(SessionDescription),
    /// Start the watchdog: if no answer comes, offer again.
    WatchAnswer,
}

/// Which operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    MakeOffer,
    AcceptOffer,
    ApplyAnswer,
}

/// What happened to a remote offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferOutcome {
    Accepted,
    /// Glare, and we are the impolite side: our offer wins, theirs is dropped.
    Ignored,
}

#[derive(Clone, Debug, Default)]
pub struct Negotiation {
    polite: bool,
    making_offer: bool,
    awaiting_answer: bool,
    applying_answer: bool,
    accepting: u32,
    /// `negotiationneeded` arrived while busy: offer once stable.
    offer_needed: bool,
    /// A remote description has been applied or queued: candidates can go to the connection.
    has_remote: bool,
    early_candidates: Vec<IceCandidate>,
    /// Candidates dropped because `early_candidates` was full (for the console).
    pub dropped_candidates: u32,
}

impl Negotiation {
    pub fn new(polite: bool) -> Self {
        Self {
            polite,
            ..Self::default()
        }
    }

    pub fn polite(&self) -> bool {
        self.polite
    }

    /// Nothing in flight: what the W3C code calls `signalingState == "stable"` and not making an
    /// offer.
    pub fn is_stable(&self) -> bool {
        !self.making_offer && !self.awaiting_answer && self.accepting == 0
    }

    #[cfg(test)]
    pub fn awaiting_answer(&self) -> bool {
        self.awaiting_answer
    }

    pub fn has_remote(&self) -> bool {
        self.has_remote
    }

    /// The browser says the connection needs (re)negotiating (or we start a connection's first
    /// offer without waiting for the browser to say so).
    ///
    /// While an offer of ours is being made it covers this: the browser fires the event only
    /// while stable, so it was fired before that offer was set, for changes made before it
    /// (the adapter runs nothing else on the connection meanwhile; a change queued behind the
    /// offer makes the browser ask again once stable). Typically: the first offer was started
    /// at once and the browser's own `negotiationneeded` for the new transceivers comes in
    /// while it is being made. Taking it as new would renegotiate right after connecting.
    pub fn negotiation_needed(&mut self, out: &mut Vec<Step>) {
        if self.making_offer {
            return;
        }
        if self.is_stable() {
            self.making_offer = true;
            out.push(Step::MakeOffer);
        } else {
            self.offer_needed = true;
        }
    }

    /// Offer again while waiting for an answer that may have been lost (the watchdog fired, or
    /// signaling came back without the messages sent meanwhile). Setting a new local offer in
    /// `have-local-offer` is allowed; the remote answers whichever offer it gets.
    pub fn offer_again(&mut self, out: &mut Vec<Step>) {
        if self.awaiting_answer && !self.applying_answer && !self.making_offer {
            self.making_offer = true;
            out.push(Step::MakeOffer);
        }
    }

    /// The adapter set a local description (from `MakeOffer` or `AcceptOffer`).
    pub fn local_description(&mut self, description: SessionDescription, out: &mut Vec<Step>) {
        match description.kind {
            SdpKind::Offer => {
                self.making_offer = false;
                if self.accepting > 0 {
                    // A remote offer is queued behind this one (we are polite): it will roll
                    // this offer back, so the other side must never see it.
                    return;
                }
                self.awaiting_answer = true;
                out.push(Step::Send(description));
                out.push(Step::WatchAnswer);
            }
            SdpKind::Answer => {
                self.accepting = self.accepting.saturating_sub(1);
                if self.accepting == 0 {
                    // Accepting an offer rolled back any offer of ours.
                    self.awaiting_answer = false;
                    self.applying_answer = false;
                }
                out.push(Step::Send(description));
                self.settle(out);
            }
        }
    }

    /// A description from the remote peer (already checked to be for this connection).
    pub fn remote_description(
        &mut self,
        description: SessionDescription,
        out: &mut Vec<Step>,
    ) -> Option<OfferOutcome> {
        match description.kind {
            SdpKind::Offer => {
                let ready = !self.making_offer && (!self.awaiting_answer || self.applying_answer);
                if !ready && !self.polite {
                    return Some(OfferOutcome::Ignored);
                }
                self.accepting += 1;
                self.has_remote = true;
                out.push(Step::AcceptOffer(description));
                self.flush_candidates(out);
                Some(OfferOutcome::Accepted)
            }
            SdpKind::Answer => {
                if !self.awaiting_answer || self.applying_answer {
                    // An answer to an offer that was rolled back or already answered: stale.
                    return None;
                }
                self.applying_answer = true;
                self.has_remote = true;
                out.push(Step::ApplyAnswer(description));
                self.flush_candidates(out);
                None
            }
        }
    }

    /// The queued answer has been applied: stable again.
    pub fn answer_applied(&mut self, out: &mut Vec<Step>) {
        self.applying_answer = false;
        self.awaiting_answer = false;
        self.settle(out);
    }

    /// An operation failed. The machine goes back to a state from which the next
    /// `negotiationneeded` (or the watchdog) can start over.
    pub fn failed(&mut self, operation: Operation, out: &mut Vec<Step>) {
        match operation {
            Operation::MakeOffer => self.making_offer = false,
            Operation::AcceptOffer => {
                self.accepting = self.accepting.saturating_sub(1);
            }
            Operation::ApplyAnswer => {
                self.applying_answer = false;
                self.awaiting_answer = false;
            }
        }
        self.settle(out);
    }

    /// A remote candidate: to the connection if it can take it, else kept for later.
    pub fn remote_candidate(&mut self, candidate: IceCandidate, out: &mut Vec<Step>) {
        if self.has_remote {
            out.push(Step::AddCandidate(candidate));
        } else if self.early_candidates.len() < MAX_EARLY_CANDIDATES {
            self.early_candidates.push(candidate);
        } else {
            self.dropped_candidates += 1;
        }
    }

    fn flush_candidates(&mut self, out: &mut Vec<Step>) {
        out.extend(self.early_candidates.drain(..).map(Step::AddCandidate));
    }

    /// Back to stable: make the offer that was asked for meanwhile.
    fn settle(&mut self, out: &mut Vec<Step>) {
        if self.is_stable() && self.offer_needed {
            self.offer_needed = false;
            self.negotiation_needed(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(tag: &str) -> SessionDescription {
        SessionDescription {
            kind: SdpKind::Offer,
            sdp: tag.into(),
        }
    }

    fn answer(tag: &str) -> SessionDescription {
        SessionDescription {
            kind: SdpKind::Answer,
            sdp: tag.into(),
        }
    }

    fn cand(tag: &str) -> IceCandidate {
        IceCandidate {
            candidate: tag.into(),
            sdp_mid: None,
            sdp_m_line_index: None,
            username_fragment: None,
        }
    }

    fn steps(f: impl FnOnce(&mut Vec<Step>)) -> Vec<Step> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn a_plain_offer_answer_round() {
        let mut n = Negotiation::new(false);
        assert_eq!(steps(|o| n.negotiation_needed(o)), [Step::MakeOffer]);
        assert!(!n.is_stable());
        assert_eq!(
            steps(|o| n.local_description(offer("o1"), o)),
            [Step::Send(offer("o1")), Step::WatchAnswer]
        );
        assert_eq!(
            steps(|o| {
                n.remote_description(answer("a1"), o);
            }),
            [Step::ApplyAnswer(answer("a1"))]
        );
        assert!(steps(|o| n.answer_applied(o)).is_empty());
        assert!(n.is_stable());
    }

    #[test]
    fn negotiation_needed_while_busy_offers_once_stable() {
        let mut n = Negotiation::new(true);
        let _ = steps(|o| n.negotiation_needed(o));
        let _ = steps(|o| n.local_description(offer("o1"), o));
        assert!(steps(|o| n.negotiation_needed(o)).is_empty());
        let _ = steps(|o| {
            n.remote_description(answer("a1"), o);
        });
        assert_eq!(steps(|o| n.answer_applied(o)), [Step::MakeOffer]);
        // Likewise while accepting their offer.
        let mut n = Negotiation::new(true);
        let _ = steps(|o| {
            n.remote_description(offer("theirs"), o);
        });
        assert!(steps(|o| n.negotiation_needed(o)).is_empty());
        assert_eq!(
            steps(|o| n.local_description(answer("a"), o)),
            [Step::Send(answer("a")), Step::MakeOffer]
        );
    }

    #[test]
    fn negotiation_needed_while_our_offer_is_being_made_is_covered_by_it() {
        let mut n = Negotiation::new(false);
        assert_eq!(steps(|o| n.negotiation_needed(o)), [Step::MakeOffer]);
        // The browser's event for the same transceivers, fired before the offer was set.
        assert!(steps(|o| n.negotiation_needed(o)).is_empty());
        let _ = steps(|o| n.local_description(offer("o1"), o));
        let _ = steps(|o| {
            n.remote_description(answer("a1"), o);
        });
        assert!(steps(|o| n.answer_applied(o)).is_empty(), "no second round");
        assert!(n.is_stable());
    }

    #[test]
    fn glare_impolite_ignores_the_remote_offer() {
        let mut n = Negotiation::new(false);
        let _ = steps(|o| n.negotiation_needed(o));
        // Their offer arrives while ours is being made...
        let mut out = Vec::new();
        assert_eq!(
            n.remote_description(offer("theirs"), &mut out),
            Some(OfferOutcome::Ignored)
        );
        assert!(out.is_empty());
        // ...and while ours is out.
        let _ = steps(|o| n.local_description(offer("ours"), o));
        assert_eq!(
            n.remote_description(offer("theirs again"), &mut out),
            Some(OfferOutcome::Ignored)
        );
        assert!(out.is_empty());
        // Their answer to our offer settles it.
        assert_eq!(
            steps(|o| {
                n.remote_description(answer("a"), o);
            }),
            [Step::ApplyAnswer(answer("a"))]
        );
    }

    #[test]
    fn glare_polite_accepts_and_never_sends_the_offer_being_rolled_back() {
        let mut n = Negotiation::new(true);
        let _ = steps(|o| n.negotiation_needed(o));
        assert_eq!(
            steps(|o| {
                n.remote_description(offer("theirs"), o);
            }),
            [Step::AcceptOffer(offer("theirs"))]
        );
        // Our offer completes first (the adapter runs operations in order), but it is about to
        // be rolled back by theirs: not sent.
        assert!(steps(|o| n.local_description(offer("ours"), o)).is_empty());
        assert_eq!(
            steps(|o| n.local_description(answer("ours to theirs"), o)),
            [Step::Send(answer("ours to theirs"))]
        );
        assert!(n.is_stable());
    }

    #[test]
    fn glare_polite_with_our_offer_already_out() {
        let mut n = Negotiation::new(true);
        let _ = steps(|o| n.negotiation_needed(o));
        let _ = steps(|o| n.local_description(offer("ours"), o));
        assert!(n.awaiting_answer());
        let out = steps(|o| {
            n.remote_description(offer("theirs"), o);
        });
        assert_eq!(out, [Step::AcceptOffer(offer("theirs"))]);
        let _ = steps(|o| n.local_description(answer("a"), o));
        assert!(n.is_stable(), "our offer was rolled back");
        // A late answer to our rolled-back offer is stale and ignored.
        assert!(steps(|o| {
            n.remote_description(answer("late"), o);
        })
        .is_empty());
    }

    #[test]
    fn a_new_offer_right_after_their_answer_is_not_a_collision() {
        let mut n = Negotiation::new(false);
        let _ = steps(|o| n.negotiation_needed(o));
        let _ = steps(|o| n.local_description(offer("o"), o));
        let _ = steps(|o| {
            n.remote_description(answer("a"), o);
        });
        // The answer is queued but not applied yet; they renegotiate at once.
        let mut out = Vec::new();
        assert_eq!(
            n.remote_description(offer("o2"), &mut out),
            Some(OfferOutcome::Accepted)
        );
    }

    #[test]
    fn candidates_before_the_description_wait_for_it() {
        let mut n = Negotiation::new(true);
        assert!(steps(|o| n.remote_candidate(cand("c1"), o)).is_empty());
        assert!(steps(|o| n.remote_candidate(cand("c2"), o)).is_empty());
        assert_eq!(
            steps(|o| {
                n.remote_description(offer("o"), o);
            }),
            [
                Step::AcceptOffer(offer("o")),
                Step::AddCandidate(cand("c1")),
                Step::AddCandidate(cand("c2"))
            ]
        );
        assert_eq!(
            steps(|o| n.remote_candidate(cand("c3"), o)),
            [Step::AddCandidate(cand("c3"))]
        );
    }

    #[test]
    fn early_candidates_are_bounded() {
        let mut n = Negotiation::new(true);
        for i in 0..MAX_EARLY_CANDIDATES + 5 {
            let _ = steps(|o| n.remote_candidate(cand(&i.to_string()), o));
        }
        assert_eq!(n.dropped_candidates, 5);
        let out = steps(|o| {
            n.remote_description(offer("o"), o);
        });
        assert_eq!(out.len(), 1 + MAX_EARLY_CANDIDATES);
    }

    #[test]
    fn failures_return_to_a_state_that_can_start_over() {
        let mut n = Negotiation::new(false);
        let _ = steps(|o| n.negotiation_needed(o));
        let _ = steps(|o| n.failed(Operation::MakeOffer, o));
        assert!(n.is_stable());
        assert_eq!(steps(|o| n.negotiation_needed(o)), [Step::MakeOffer]);
        let _ = steps(|o| n.local_description(offer("o"), o));
        let _ = steps(|o| {
            n.remote_description(answer("bad"), o);
        });
        let _ = steps(|o| n.failed(Operation::ApplyAnswer, o));
        assert!(n.is_stable());
    }

    #[test]
    fn offering_again_while_an_answer_is_lost() {
        let mut n = Negotiation::new(false);
        assert!(steps(|o| n.offer_again(o)).is_empty(), "nothing to redo");
        let _ = steps(|o| n.negotiation_needed(o));
        let _ = steps(|o| n.local_description(offer("o1"), o));
        assert_eq!(steps(|o| n.offer_again(o)), [Step::MakeOffer]);
        assert!(
            steps(|o| n.offer_again(o)).is_empty(),
            "one offer at a time"
        );
        assert_eq!(
            steps(|o| n.local_description(offer("o2"), o)),
            [Step::Send(offer("o2")), Step::WatchAnswer]
        );
    }
}
