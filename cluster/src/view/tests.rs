//! Unit tests of one node's view state machine, message by message: each refusal is an error
//! value that changes nothing, and each accepted step does exactly what the protocol says.

use super::*;

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

fn key(k: u64) -> ClusterKey {
    ClusterKey::new(k).unwrap()
}

fn succession(ids: &[u64]) -> Succession {
    Succession::new(ids.iter().map(|&i| NodeId(i))).unwrap()
}

fn node(id: u64, peers: &[u64]) -> Node {
    let mut n = Node::new(NodeId(id), ViewConfig::default(), 42, ms(0)).unwrap();
    let mut out = Output::default();
    n.set_adjacency(ms(0), peers.iter().map(|&p| NodeId(p)), &mut out)
        .unwrap();
    // Newly seen peers are told the status at once.
    assert_eq!(out.messages.len(), peers.len());
    n
}

fn status(view: Option<(u64, u64)>, adjacency: &[u64]) -> Message {
    Message::Status(Status {
        view: view.map(|(k, p)| ViewSummary {
            cluster_key: key(k),
            principal: NodeId(p),
        }),
        adjacency: adjacency.iter().map(|&i| NodeId(i)).collect(),
    })
}

fn propose(k: u64, ids: &[u64], principal_view: Option<u64>) -> Message {
    Message::Propose {
        cluster_key: key(k),
        succession: succession(ids),
        principal_view: principal_view.map(key),
    }
}

/// Node 1, a committed member of view 0x31 = {3, 2, 1} led by 3, at 3 ms.
fn member_of_view_0x31() -> Node {
    let mut n = node(1, &[2, 3]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(3), status(None, &[1, 2]), &mut out)
        .unwrap();
    n.on_message(ms(2), NodeId(3), propose(0x31, &[3, 2, 1], None), &mut out)
        .unwrap();
    let commit = Message::Commit {
        cluster_key: key(0x31),
    };
    n.on_message(ms(3), NodeId(3), commit, &mut out).unwrap();
    assert!(n.is_member());
    n
}

fn quantum_ms() -> u64 {
    ViewConfig::default().quantum.as_millis() as u64
}

#[test]
fn the_default_quantum_is_aerospikes_and_node_zero_is_refused() {
    assert_eq!(ViewConfig::default().quantum, Duration::from_millis(1_800));
    assert!(matches!(
        Node::new(NodeId(0), ViewConfig::default(), 1, ms(0)),
        Err(ViewError::ZeroNode)
    ));
    let mut n = node(1, &[]);
    let too_many = (2..=ADJACENCY_NODES_MAX as u64 + 2).map(NodeId);
    assert_eq!(
        n.set_adjacency(ms(0), too_many, &mut Output::default()),
        Err(ViewError::TooManyPeers {
            count: ADJACENCY_NODES_MAX + 1
        })
    );
    assert!(
        n.adjacency().is_empty(),
        "a refused adjacency changes nothing"
    );
}

#[test]
fn a_lone_node_forms_a_cluster_of_one_at_its_first_quantum_and_not_before() {
    let mut n = node(0xA1, &[]);
    let mut out = Output::default();
    n.on_tick(ms(quantum_ms() - 1), &mut out);
    assert!(out.events.is_empty() && n.view().is_none() && !n.is_member());
    n.on_tick(ms(quantum_ms()), &mut out);
    let [Event::Committed(view)] = out.events.as_slice() else {
        panic!("{:?}", out.events)
    };
    assert_eq!(view.succession, succession(&[0xA1]));
    assert!(view.cluster_key.get() >> message::CLUSTER_KEY_BITS == 0);
    assert!(n.is_member());
    // Nothing changes later: no new key every quantum.
    let mut out = Output::default();
    for q in 2..10 {
        n.on_tick(ms(q * quantum_ms()), &mut out);
    }
    assert!(out.events.is_empty());
}

#[test]
fn messages_from_itself_unseen_peers_or_in_bad_bytes_are_refused() {
    let mut n = node(2, &[3]);
    let mut out = Output::default();
    let st = status(None, &[2]);
    assert_eq!(
        n.on_message(ms(1), NodeId(2), st.clone(), &mut out),
        Err(ViewError::FromSelf)
    );
    assert_eq!(
        n.on_message(ms(1), NodeId(9), st, &mut out),
        Err(ViewError::SenderNotAdjacent(NodeId(9)))
    );
    assert_eq!(
        n.on_bytes(ms(1), NodeId(3), &[1, 77], &mut out),
        Err(ViewError::Malformed {
            from: NodeId(3),
            error: MessageError::Kind(77)
        })
    );
    assert!(out.messages.is_empty() && out.events.is_empty());
}

#[test]
fn a_member_checks_every_proposal_and_commits_only_the_one_it_accepted() {
    // Node 2 sees 3 and 1; 3 is an orphan that sees both.
    let mut n = node(2, &[1, 3]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(3), status(None, &[1, 2]), &mut out)
        .unwrap();
    n.on_message(ms(1), NodeId(1), status(None, &[2, 3]), &mut out)
        .unwrap();

    let refusals = [
        (
            NodeId(1),
            propose(0x10, &[3, 2, 1], None),
            ViewError::ProposerNotPrincipal {
                sender: NodeId(1),
                principal: NodeId(3),
            },
        ),
        (
            NodeId(3),
            propose(0x10, &[3, 1], None),
            ViewError::NotProposed(NodeId(3)),
        ),
        (
            NodeId(3),
            propose(0x10, &[3, 2, 1], Some(0x99)),
            ViewError::ProposalFromOtherView {
                proposer: NodeId(3),
                principal_view: Some(key(0x99)),
            },
        ),
    ];
    for (from, m, err) in refusals {
        assert_eq!(n.on_message(ms(2), from, m, &mut out), Err(err));
    }
    assert!(out.messages.is_empty(), "a refusal sends nothing");

    n.on_message(ms(3), NodeId(3), propose(0x10, &[3, 2, 1], None), &mut out)
        .unwrap();
    assert_eq!(
        out.messages,
        vec![Outgoing {
            to: NodeId(3),
            message: Message::Accept {
                cluster_key: key(0x10)
            }
        }]
    );
    // A duplicate is answered again (the first answer may be lost); still no commit.
    n.on_message(ms(4), NodeId(3), propose(0x10, &[3, 2, 1], None), &mut out)
        .unwrap();
    assert_eq!(out.messages.len(), 2);
    assert!(out.events.is_empty() && !n.is_member());

    // A commit of another key, or from someone else, commits nothing.
    let commit = |k| Message::Commit {
        cluster_key: key(k),
    };
    assert_eq!(
        n.on_message(ms(5), NodeId(3), commit(0x11), &mut out),
        Err(ViewError::UnknownProposal(key(0x11)))
    );
    assert_eq!(
        n.on_message(ms(5), NodeId(1), commit(0x10), &mut out),
        Err(ViewError::UnknownProposal(key(0x10)))
    );
    assert!(!n.is_member());
    n.on_message(ms(6), NodeId(3), commit(0x10), &mut out)
        .unwrap();
    assert_eq!(
        out.events,
        vec![Event::Committed(View {
            cluster_key: key(0x10),
            succession: succession(&[3, 2, 1])
        })]
    );
    assert!(n.is_member());
    assert_eq!(
        n.on_message(ms(7), NodeId(3), commit(0x10), &mut out),
        Err(ViewError::AlreadyCommitted(key(0x10)))
    );
    assert_eq!(
        n.on_message(ms(7), NodeId(3), propose(0x10, &[3, 2, 1], None), &mut out),
        Err(ViewError::StaleProposal(key(0x10)))
    );
    assert_eq!(out.events.len(), 1);
}

#[test]
fn a_proposal_naming_a_node_this_member_does_not_see_is_refused() {
    let mut n = node(2, &[3]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(3), status(None, &[1, 2]), &mut out)
        .unwrap();
    assert_eq!(
        n.on_message(ms(2), NodeId(3), propose(0x10, &[3, 2, 1], None), &mut out),
        Err(ViewError::ProposalNotClique {
            proposer: NodeId(3),
            unseen: NodeId(1)
        })
    );
}

#[test]
fn a_member_follows_its_principal_not_a_lower_one_it_also_sees() {
    // Node 20 is in 30's view; 25 (lower than 30) proposes to take it.
    let mut n = node(20, &[25, 30]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(30), status(None, &[20, 25]), &mut out)
        .unwrap();
    n.on_message(ms(2), NodeId(30), propose(0x30, &[30, 20], None), &mut out)
        .unwrap();
    n.on_message(
        ms(3),
        NodeId(30),
        Message::Commit {
            cluster_key: key(0x30),
        },
        &mut out,
    )
    .unwrap();
    assert!(n.is_member());
    n.on_message(
        ms(4),
        NodeId(25),
        status(Some((0x25, 25)), &[20, 30]),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        n.on_message(
            ms(5),
            NodeId(25),
            propose(0x26, &[25, 20], Some(0x25)),
            &mut out
        ),
        Err(ViewError::FollowsHigherPrincipal {
            proposer: NodeId(25),
            current: NodeId(30)
        })
    );
    assert_eq!(n.view().unwrap().cluster_key, key(0x30));
}

#[test]
fn a_principal_commits_when_every_member_accepted_and_only_then() {
    // Node 3 sees orphans 1 and 2, which see everyone: at its first quantum it proposes.
    let mut n = node(3, &[1, 2]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(1), status(None, &[2, 3]), &mut out)
        .unwrap();
    n.on_message(ms(1), NodeId(2), status(None, &[1, 3]), &mut out)
        .unwrap();
    n.on_tick(ms(quantum_ms()), &mut out);
    let proposals: Vec<_> = out
        .messages
        .iter()
        .filter_map(|m| match &m.message {
            Message::Propose {
                cluster_key,
                succession,
                principal_view: None,
            } => Some((m.to, *cluster_key, succession.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(proposals.len(), 2, "{:?}", out.messages);
    let k = proposals[0].1;
    assert!(proposals
        .iter()
        .all(|(_, pk, s)| *pk == k && *s == succession(&[3, 2, 1])));

    let mut out = Output::default();
    let accept = Message::Accept { cluster_key: k };
    assert_eq!(
        n.on_message(
            ms(1_900),
            NodeId(2),
            Message::Accept {
                cluster_key: key(1)
            },
            &mut out
        ),
        Err(ViewError::UnknownProposal(key(1)))
    );
    n.on_message(ms(1_900), NodeId(2), accept.clone(), &mut out)
        .unwrap();
    assert!(out.events.is_empty(), "one member has not accepted yet");
    n.on_message(ms(1_901), NodeId(1), accept.clone(), &mut out)
        .unwrap();
    assert_eq!(
        out.events,
        vec![Event::Committed(View {
            cluster_key: k,
            succession: succession(&[3, 2, 1])
        })]
    );
    let commits = out
        .messages
        .iter()
        .filter(|m| m.message == Message::Commit { cluster_key: k })
        .count();
    assert_eq!(commits, 2);
    // Late or duplicated accepts of a finished round are refused.
    assert_eq!(
        n.on_message(ms(1_902), NodeId(1), accept, &mut out),
        Err(ViewError::UnknownProposal(k))
    );
}

#[test]
fn an_accept_from_outside_the_proposal_is_refused() {
    let mut n = node(3, &[1, 2]);
    let mut out = Output::default();
    // 2 does not see 1, so the clique is {3, 2}... and 1 is left out.
    n.on_message(ms(1), NodeId(2), status(None, &[3]), &mut out)
        .unwrap();
    n.on_message(ms(1), NodeId(1), status(None, &[3]), &mut out)
        .unwrap();
    n.on_tick(ms(quantum_ms()), &mut out);
    let k = out
        .messages
        .iter()
        .find_map(|m| match &m.message {
            Message::Propose {
                cluster_key,
                succession: s,
                ..
            } => {
                assert_eq!(*s, succession(&[3, 2]));
                Some(*cluster_key)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        n.on_message(
            ms(1_801),
            NodeId(1),
            Message::Accept { cluster_key: k },
            &mut out
        ),
        Err(ViewError::AcceptFromNonMember(NodeId(1)))
    );
}

#[test]
fn a_member_whose_principal_vanishes_keeps_its_view_for_the_orphan_timeout() {
    // Node 1, member of {3, 1}; 3 vanishes, while 2 (higher, an orphan that sees 1 and will
    // never lead in this test) makes 1 wait to be absorbed.
    let mut n = node(1, &[3]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(3), status(None, &[1]), &mut out)
        .unwrap();
    n.on_message(ms(2), NodeId(3), propose(0x31, &[3, 1], None), &mut out)
        .unwrap();
    n.on_message(
        ms(3),
        NodeId(3),
        Message::Commit {
            cluster_key: key(0x31),
        },
        &mut out,
    )
    .unwrap();
    let mut out = Output::default();
    n.set_adjacency(ms(100), [NodeId(2)], &mut out).unwrap();
    // Peers hear at once that it is an orphan now (a new leader need not wait a quantum).
    assert_eq!(
        out.messages,
        vec![Outgoing {
            to: NodeId(2),
            message: status(None, &[2])
        }]
    );
    n.on_message(ms(101), NodeId(2), status(None, &[1]), &mut out)
        .unwrap();
    assert!(!n.is_member(), "orphan as soon as its principal is gone");
    assert_eq!(n.view().unwrap().cluster_key, key(0x31));
    let mut out = Output::default();
    let q = quantum_ms();
    for t in (q..5 * q).step_by(10) {
        n.on_tick(ms(t), &mut out);
    }
    assert!(out.events.is_empty());
    assert_eq!(n.view().unwrap().cluster_key, key(0x31), "kept ~5 quanta");
    for t in (5 * q..7 * q).step_by(10) {
        n.on_tick(ms(t), &mut out);
    }
    assert_eq!(out.events, vec![Event::Orphaned]);
    assert!(n.view().is_none());
}

#[test]
fn a_lost_commit_is_recovered_from_the_principals_status() {
    let mut n = node(1, &[3]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(3), status(None, &[1]), &mut out)
        .unwrap();
    n.on_message(ms(2), NodeId(3), propose(0x31, &[3, 1], None), &mut out)
        .unwrap();
    assert!(!n.is_member());
    n.on_message(ms(500), NodeId(3), status(Some((0x31, 3)), &[1]), &mut out)
        .unwrap();
    assert!(n.is_member());
    assert_eq!(n.view().unwrap().cluster_key, key(0x31));
}

#[test]
fn a_lost_peer_is_decided_on_within_a_quarter_quantum_not_at_the_next_boundary() {
    // Node 3 and orphan 1 form {3, 1} at the first quantum.
    let mut n = node(3, &[1]);
    let mut out = Output::default();
    n.on_message(ms(1), NodeId(1), status(None, &[3]), &mut out)
        .unwrap();
    n.on_tick(ms(quantum_ms()), &mut out);
    let k = out
        .messages
        .iter()
        .find_map(|m| match &m.message {
            Message::Propose { cluster_key, .. } => Some(*cluster_key),
            _ => None,
        })
        .unwrap();
    let mut out = Output::default();
    n.on_message(
        ms(quantum_ms() + 5),
        NodeId(1),
        Message::Accept { cluster_key: k },
        &mut out,
    )
    .unwrap();
    assert!(matches!(out.events.as_slice(), [Event::Committed(_)]));
    // Early in the next quantum, 1 is declared dead.
    let lost_at = quantum_ms() + 200;
    n.set_adjacency(ms(lost_at), [], &mut Output::default())
        .unwrap();
    let settle = quantum_ms() / LOSS_SETTLE_QUANTUM_FRACTION as u64;
    let mut out = Output::default();
    n.on_tick(ms(lost_at + settle - 1), &mut out);
    assert!(out.events.is_empty(), "not before the news could spread");
    n.on_tick(ms(lost_at + settle), &mut out);
    let [Event::Committed(view)] = out.events.as_slice() else {
        panic!("{:?}", out.events)
    };
    assert_eq!(view.succession, succession(&[3]));
    assert!(
        lost_at + settle < 2 * quantum_ms(),
        "earlier than the next boundary"
    );
    // Gaining a peer changes no timing: the boundary after the decision stands.
    let mut out = Output::default();
    n.set_adjacency(ms(lost_at + settle + 10), [NodeId(1)], &mut out)
        .unwrap();
    n.on_tick(ms(lost_at + settle + quantum_ms() - 1), &mut out);
    assert!(out.events.is_empty());
}

#[test]
fn a_member_whose_principal_went_on_without_it_is_superseded_at_once() {
    // Node 1, member of {3, 2, 1}, was paused: 3 and 2 went on in view 0x32. The first status
    // of 3 naming 0x32 tells 1 to stop serving by 0x31, once, without waiting a quantum.
    let mut n = member_of_view_0x31();
    // Statuses sent before the commit may still arrive: not a sign of anything.
    let mut out = Output::default();
    n.on_message(ms(10), NodeId(3), status(None, &[1, 2]), &mut out)
        .unwrap();
    n.on_message(
        ms(11),
        NodeId(3),
        status(Some((0x30, 3)), &[1, 2]),
        &mut out,
    )
    .unwrap();
    assert!(out.events.is_empty(), "{:?}", out.events);
    // A member (not the principal) in another view says nothing about this one.
    let late = 3 + quantum_ms();
    n.on_message(
        ms(late),
        NodeId(2),
        status(Some((0x32, 3)), &[1, 3]),
        &mut out,
    )
    .unwrap();
    assert!(out.events.is_empty(), "{:?}", out.events);
    n.on_message(
        ms(late + 1),
        NodeId(3),
        status(Some((0x31, 3)), &[1, 2]),
        &mut out,
    )
    .unwrap();
    assert!(out.events.is_empty(), "its own view: {:?}", out.events);
    n.on_message(
        ms(late + 2),
        NodeId(3),
        status(Some((0x32, 3)), &[2]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.events, vec![Event::Superseded]);
    let mut out = Output::default();
    n.on_message(
        ms(late + 3),
        NodeId(3),
        status(Some((0x32, 3)), &[2]),
        &mut out,
    )
    .unwrap();
    assert!(out.events.is_empty(), "once per view");
}

#[test]
fn a_member_that_accepted_the_view_its_principal_moved_to_is_not_superseded() {
    // Node 1, member of {3, 2, 1}; node 4 joins and, the highest id, proposes {4, 3, 2, 1}.
    // 1 accepts; the old principal 3's status naming the new view overtakes 4's commit: 1 is
    // a member of that view, so it keeps serving until the commit comes.
    let mut n = member_of_view_0x31();
    let mut out = Output::default();
    let late = 3 + quantum_ms();
    n.set_adjacency(ms(late), [NodeId(2), NodeId(3), NodeId(4)], &mut out)
        .unwrap();
    n.on_message(ms(late + 1), NodeId(4), status(None, &[1, 2, 3]), &mut out)
        .unwrap();
    n.on_message(
        ms(late + 2),
        NodeId(4),
        propose(0x41, &[4, 3, 2, 1], None),
        &mut out,
    )
    .unwrap();
    let mut out = Output::default();
    n.on_message(
        ms(late + 3),
        NodeId(3),
        status(Some((0x41, 4)), &[1, 2, 4]),
        &mut out,
    )
    .unwrap();
    assert!(out.events.is_empty(), "{:?}", out.events);
    n.on_message(
        ms(late + 4),
        NodeId(4),
        Message::Commit {
            cluster_key: key(0x41),
        },
        &mut out,
    )
    .unwrap();
    assert!(n.is_member());
    assert_eq!(n.view().unwrap().cluster_key, key(0x41));
    assert!(
        out.events.iter().all(|e| *e != Event::Superseded),
        "{:?}",
        out.events
    );
}

#[test]
fn a_node_alone_in_its_view_that_meets_another_cluster_is_superseded() {
    let mut n = node(2, &[]);
    let mut out = Output::default();
    n.on_tick(ms(quantum_ms()), &mut out);
    assert!(n.is_member() && n.view().unwrap().succession.len() == 1);
    let mut out = Output::default();
    let mut seen = Output::default();
    n.set_adjacency(ms(quantum_ms() + 500), [NodeId(1)], &mut seen)
        .unwrap();
    // An orphan peer says nothing; a peer in a view (even a lower principal's) does.
    n.on_message(
        ms(quantum_ms() + 600),
        NodeId(1),
        status(None, &[2]),
        &mut out,
    )
    .unwrap();
    assert!(out.events.is_empty());
    n.on_message(
        ms(quantum_ms() + 700),
        NodeId(1),
        status(Some((0x71, 1)), &[2]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.events, vec![Event::Superseded]);
}
