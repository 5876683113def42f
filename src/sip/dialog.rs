//! Dialogs (RFC 3261 §12): the state two user agents share after an INVITE, and the requests sent in it.
//!
//! A [`Dialog`] is created on the UAC side from the INVITE we sent and a 101–299 response with a To tag
//! ([`Dialog::uac`]), or on the UAS side from the INVITE we received and the response we send
//! ([`Dialog::uas`]). It checks incoming in-dialog requests ([`Dialog::handle_request`]: CSeq order, target
//! refresh), follows responses ([`Dialog::handle_response`]: early → confirmed, target refresh), and builds
//! in-dialog requests with the right Request-URI, Route set and CSeq ([`Dialog::build_request`],
//! [`Dialog::build_ack`]). It holds no timers and sends nothing: the B2BUA passes what it builds to the
//! transaction layer.

use rsip::{Method, Request, Response, Scheme, Uri, Version};

use crate::sip::message::{self, CSeq, DEFAULT_MAX_FORWARDS, MessageError, MessageHeaders, NameAddr, Via};

/// Why a message cannot create, or does not fit, a dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// A header the dialog needs is missing or malformed.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// Only 101–299 responses create dialogs.
    #[error("a {0} response does not create a dialog")]
    NotDialogCreating(u16),
    /// The tag that identifies one side of the dialog is missing (`From` or `To`).
    #[error("{0} tag missing")]
    MissingTag(&'static str),
    /// The INVITE we received has no Contact, so the dialog has no remote target.
    #[error("no Contact: the remote target is unknown")]
    MissingContact,
    /// The message's Call-ID or tags are not this dialog's.
    #[error("message does not belong to this dialog")]
    Mismatch,
    /// A request whose CSeq is lower than the last one received: answer 500 (§12.2.2).
    #[error("CSeq {received} is lower than the last one, {last}")]
    CSeqOutOfOrder {
        /// The CSeq number of the request.
        received: u32,
        /// The last CSeq number received in the dialog.
        last: u32,
    },
    /// ACK and CANCEL are not built by `build_request` (see `build_ack` and `message::build_cancel`).
    #[error("{0} is not built with build_request")]
    WrongMethod(Method),
}

/// Which user agent we are in the dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogSide {
    /// We sent the INVITE.
    Uac,
    /// We received the INVITE.
    Uas,
}

/// Early (after a provisional response) or confirmed (after a 2xx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a 101–199 response.
    Early,
    /// A 2xx was sent or received.
    Confirmed,
}

/// What identifies a dialog (§12): the Call-ID and both tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag (From tag in our requests).
    pub local_tag: String,
    /// The peer's tag (To tag in our requests); empty for an RFC 2543 peer without a From tag.
    pub remote_tag: String,
}

/// One dialog's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    side: DialogSide,
    state: DialogState,
    /// Our last CSeq number; `None` on the UAS side until we send a request.
    local_seq: Option<u32>,
    /// The peer's last CSeq number.
    remote_seq: Option<u32>,
    /// Our party, with our tag: the From of our requests.
    local: NameAddr,
    /// The peer's party, with its tag: the To of our requests.
    remote: NameAddr,
    /// Our Contact, sent in target-refresh requests.
    local_contact: Option<NameAddr>,
    /// Where in-dialog requests go: the peer's Contact URI.
    remote_target: Uri,
    /// The Route set, in the order of the Route headers of our requests.
    route_set: Vec<NameAddr>,
    secure: bool,
}

impl Dialog {
    /// The dialog our INVITE created with a 101–299 response carrying a To tag. The route set is the
    /// response's Record-Route reversed; the remote target its Contact (the Request-URI when a provisional
    /// response has no Contact).
    pub fn uac(invite: &Request, response: &Response) -> Result<Self, DialogError> {
        let state = state_for(response)?;
        let local = invite.from_addr()?;
        let remote = response.to_addr()?;
        let id = DialogId {
            call_id: invite
                .call_id()
                .ok_or(MessageError::MissingHeader("Call-ID"))?
                .to_string(),
            local_tag: local.tag().ok_or(DialogError::MissingTag("From"))?.to_string(),
            remote_tag: remote.tag().ok_or(DialogError::MissingTag("To"))?.to_string(),
        };
        let mut route_set = response.record_route()?;
        route_set.reverse();
        Ok(Dialog {
            id,
            side: DialogSide::Uac,
            state,
            local_seq: Some(invite.cseq()?.seq),
            remote_seq: None,
            local,
            remote,
            local_contact: invite.contact()?,
            remote_target: response.contact_uri()?.unwrap_or_else(|| invite.uri.clone()),
            route_set,
            secure: invite.uri.scheme == Some(Scheme::Sips),
        })
    }

    /// The dialog an INVITE we received creates with the 101–299 response we send (which must carry our To
    /// tag). The route set is the INVITE's Record-Route in order; the remote target its Contact.
    pub fn uas(invite: &Request, response: &Response) -> Result<Self, DialogError> {
        let state = state_for(response)?;
        let local = response.to_addr()?;
        let remote = invite.from_addr()?;
        let id = DialogId {
            call_id: invite
                .call_id()
                .ok_or(MessageError::MissingHeader("Call-ID"))?
                .to_string(),
            local_tag: local.tag().ok_or(DialogError::MissingTag("To"))?.to_string(),
            remote_tag: remote.tag().unwrap_or_default().to_string(),
        };
        Ok(Dialog {
            id,
            side: DialogSide::Uas,
            state,
            local_seq: None,
            remote_seq: Some(invite.cseq()?.seq),
            local,
            remote,
            local_contact: response.contact()?,
            remote_target: invite.contact_uri()?.ok_or(DialogError::MissingContact)?,
            route_set: invite.record_route()?,
            secure: invite.uri.scheme == Some(Scheme::Sips),
        })
    }

    /// The Call-ID and tags.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// UAC or UAS.
    pub fn side(&self) -> DialogSide {
        self.side
    }

    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The URI in-dialog requests are sent to (before routing).
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The Route set, in the order our requests carry it.
    pub fn route_set(&self) -> &[NameAddr] {
        &self.route_set
    }

    /// Our last CSeq number.
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    /// The peer's last CSeq number.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// True when the dialog was set up with a sips Request-URI.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Our Contact, sent in target-refresh requests.
    pub fn local_contact(&self) -> Option<&NameAddr> {
        self.local_contact.as_ref()
    }

    /// Replaces our Contact (for instance after our address changed).
    pub fn set_local_contact(&mut self, contact: NameAddr) {
        self.local_contact = Some(contact);
    }

    /// Marks the dialog confirmed: on the UAS side, once we send the 2xx.
    pub fn confirm(&mut self) {
        self.state = DialogState::Confirmed;
    }

    /// True when a request we received belongs to this dialog: same Call-ID, its To tag is ours and its
    /// From tag is the peer's.
    pub fn matches(&self, request: &Request) -> bool {
        request.call_id() == Some(self.id.call_id.as_str())
            && request.to_tag().as_deref() == Some(self.id.local_tag.as_str())
            && request.from_tag().unwrap_or_default() == self.id.remote_tag
    }

    /// True when a response we received belongs to this dialog: same Call-ID, its From tag is ours and its
    /// To tag is the peer's.
    pub fn matches_response(&self, response: &Response) -> bool {
        response.call_id() == Some(self.id.call_id.as_str())
            && response.from_tag().as_deref() == Some(self.id.local_tag.as_str())
            && response.to_tag().unwrap_or_default() == self.id.remote_tag
    }

    /// Takes an in-dialog request we received (§12.2.2): refuses a CSeq lower than the last one (answer
    /// 500), records the CSeq, and for a re-INVITE or UPDATE with a Contact replaces the remote target.
    /// ACK and CANCEL carry an earlier request's CSeq and are not checked.
    pub fn handle_request(&mut self, request: &Request) -> Result<(), DialogError> {
        if !self.matches(request) {
            return Err(DialogError::Mismatch);
        }
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let received = request.cseq()?.seq;
        if let Some(last) = self.remote_seq
            && received < last
        {
            return Err(DialogError::CSeqOutOfOrder { received, last });
        }
        if is_target_refresh(request.method)
            && let Some(target) = request.contact_uri()?
        {
            self.remote_target = target;
        }
        self.remote_seq = Some(received);
        Ok(())
    }

    /// Takes a response to a request we sent in the dialog (or to the INVITE that created it): a 2xx to
    /// INVITE confirms an early dialog (the UAC route set is recomputed from it), and a 1xx in an early
    /// dialog or a 2xx to a target-refresh request with a Contact replaces the remote target.
    pub fn handle_response(&mut self, response: &Response) -> Result<(), DialogError> {
        if !self.matches_response(response) {
            return Err(DialogError::Mismatch);
        }
        let method = response.cseq()?.method;
        let code = response.status_code.code();
        let success = (200..300).contains(&code);
        if self.state == DialogState::Early && method == Method::Invite && success {
            self.state = DialogState::Confirmed;
            if self.side == DialogSide::Uac {
                let mut route_set = response.record_route()?;
                route_set.reverse();
                self.route_set = route_set;
            }
        }
        let refreshes = (success && is_target_refresh(method))
            || (self.state == DialogState::Early && (101..200).contains(&code));
        if refreshes && let Some(target) = response.contact_uri()? {
            self.remote_target = target;
        }
        Ok(())
    }

    /// Builds an in-dialog request (BYE, re-INVITE, UPDATE, INFO, OPTIONS, …) with the next local CSeq, the
    /// dialog's From, To and Call-ID, our Contact for target-refresh requests, and the Request-URI and
    /// Route headers from the route set (§12.2.1.1). The caller adds a body and its Content-Type.
    pub fn build_request(&mut self, method: Method, via: Via) -> Result<Request, DialogError> {
        if matches!(method, Method::Ack | Method::Cancel) {
            return Err(DialogError::WrongMethod(method));
        }
        let seq = self.local_seq.map_or(1, |seq| seq.wrapping_add(1));
        let mut request = self.request(method, seq, via)?;
        if is_target_refresh(method)
            && let Some(contact) = &self.local_contact
        {
            request.push_header("Contact", contact.to_string());
        }
        self.local_seq = Some(seq);
        Ok(request)
    }

    /// Builds the ACK for a 2xx to the INVITE whose CSeq number was `invite_seq` (§13.2.2.4): same CSeq
    /// number, method ACK, routed like any in-dialog request. `via` must carry a new branch.
    pub fn build_ack(&self, invite_seq: u32, via: Via) -> Result<Request, DialogError> {
        self.request(Method::Ack, invite_seq, via)
    }

    fn request(&self, method: Method, seq: u32, via: Via) -> Result<Request, DialogError> {
        let (uri, routes) = self.request_target()?;
        let mut request = Request {
            method,
            uri,
            version: Version::V2,
            headers: Default::default(),
            body: Vec::new(),
        };
        request.push_header("Via", via.to_string());
        request.push_header("Max-Forwards", DEFAULT_MAX_FORWARDS.to_string());
        request.push_header("From", self.local.to_string());
        request.push_header("To", self.remote.to_string());
        request.push_header("Call-ID", self.id.call_id.as_str());
        request.push_header("CSeq", CSeq { seq, method }.to_string());
        for route in routes {
            request.push_header("Route", route);
        }
        Ok(request)
    }

    /// The Request-URI and Route values. Loose routing (empty route set, or a first route with `lr`):
    /// the remote target and the route set. Strict routing: the first route's URI, then the rest of the
    /// route set and the remote target as the last Route.
    fn request_target(&self) -> Result<(Uri, Vec<String>), DialogError> {
        let routes = self.route_set.iter().map(NameAddr::to_string);
        match self.route_set.first() {
            Some(first) if !first.is_loose_route() => {
                let mut uri = first.sip_uri()?;
                // §12.2.1.1: only parameters allowed in a Request-URI; `method` and `maddr` are not.
                uri.params
                    .retain(|param| !matches!(param, rsip::Param::Method(_) | rsip::Param::Maddr(_)));
                let mut rest: Vec<String> = routes.skip(1).collect();
                rest.push(NameAddr::new(self.remote_target.to_string()).to_string());
                Ok((uri, rest))
            }
            _ => Ok((self.remote_target.clone(), routes.collect())),
        }
    }
}

/// Early for 101–199, confirmed for 200–299; other codes create no dialog.
fn state_for(response: &Response) -> Result<DialogState, DialogError> {
    match response.status_code.code() {
        101..=199 => Ok(DialogState::Early),
        200..=299 => Ok(DialogState::Confirmed),
        code => Err(DialogError::NotDialogCreating(code)),
    }
}

/// Requests that may replace the remote target (RFC 3261 re-INVITE, RFC 3311 UPDATE).
fn is_target_refresh(method: Method) -> bool {
    matches!(method, Method::Invite | Method::Update)
}

/// A response to an INVITE we received that carries our To tag and Contact, ready for [`Dialog::uas`].
pub fn uas_response(
    invite: &Request,
    status: impl Into<rsip::StatusCode>,
    local_tag: &str,
    contact: &NameAddr,
) -> Response {
    let mut response = message::response_to(invite, status, Some(local_tag));
    response.push_header("Contact", contact.to_string());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::fixtures::{self, wire};
    use crate::sip::flow::Transport;
    use rsip::SipMessage;

    fn request(bytes: &[u8]) -> Request {
        match message::parse(bytes) {
            Ok(SipMessage::Request(request)) => request,
            other => panic!("{other:?}"),
        }
    }

    fn response(bytes: &[u8]) -> Response {
        match message::parse(bytes) {
            Ok(SipMessage::Response(response)) => response,
            other => panic!("{other:?}"),
        }
    }

    fn via() -> Via {
        Via::outgoing(Transport::Udp, "192.0.2.10", Some(5060))
    }

    /// The INVITE callgate sends to Asterisk, matching the ASTERISK_200 fixture.
    fn invite_to_pbx() -> Request {
        request(
            b"INVITE sip:2001@192.0.2.20 SIP/2.0\r\n\
              Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPj8c1d2e3f\r\n\
              Max-Forwards: 69\r\nFrom: <sip:+4930123456@192.0.2.10>;tag=as5d1e2f3a\r\n\
              To: <sip:2001@192.0.2.20>\r\nCall-ID: 3848276298220188511@192.0.2.10\r\nCSeq: 102 INVITE\r\n\
              Contact: <sip:callgate@192.0.2.10:5060>\r\n\r\n",
        )
    }

    fn uac_dialog() -> Dialog {
        Dialog::uac(&invite_to_pbx(), &response(&wire(fixtures::ASTERISK_200))).unwrap()
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_targets_the_contact() {
        let dialog = uac_dialog();
        assert_eq!(dialog.state(), DialogState::Confirmed);
        assert_eq!(dialog.side(), DialogSide::Uac);
        assert_eq!(dialog.id().local_tag, "as5d1e2f3a");
        assert_eq!(dialog.id().remote_tag, "9f0e1d2c-3b4a-5968-7a6b-5c4d3e2f1a0b");
        assert_eq!(dialog.remote_target().to_string(), "sip:192.0.2.20:5060");
        let routes: Vec<&str> = dialog
            .route_set()
            .iter()
            .map(|route| route.uri.as_str())
            .collect();
        assert_eq!(
            routes,
            [
                "sip:192.0.2.2;transport=udp;lr",
                "sip:192.0.2.1;lr;ftag=as5d1e2f3a"
            ]
        );
        assert_eq!(dialog.local_seq(), Some(102));
        assert!(!dialog.is_secure());
    }

    #[test]
    fn uac_requests_use_loose_routes_and_increment_cseq() {
        let mut dialog = uac_dialog();
        let bye = dialog.build_request(Method::Bye, via()).unwrap();
        assert_eq!(bye.uri.to_string(), "sip:192.0.2.20:5060");
        assert_eq!(bye.route().unwrap(), dialog.route_set());
        assert_eq!(
            bye.cseq().unwrap(),
            CSeq {
                seq: 103,
                method: Method::Bye
            }
        );
        assert_eq!(bye.from_tag().as_deref(), Some("as5d1e2f3a"));
        assert_eq!(
            bye.to_tag().as_deref(),
            Some("9f0e1d2c-3b4a-5968-7a6b-5c4d3e2f1a0b")
        );
        assert_eq!(bye.call_id(), Some("3848276298220188511@192.0.2.10"));
        assert_eq!(bye.contact().unwrap(), None, "BYE is no target refresh");
        assert_eq!(bye.max_forwards(), Ok(Some(70)));
        let reinvite = dialog.build_request(Method::Invite, via()).unwrap();
        assert_eq!(reinvite.cseq().unwrap().seq, 104);
        assert_eq!(
            reinvite.contact().unwrap().unwrap().uri,
            "sip:callgate@192.0.2.10:5060"
        );
        let printed = message::request_bytes(&reinvite);
        assert_eq!(
            request(&printed),
            reinvite,
            "what the dialog builds parses back unchanged"
        );
        assert!(dialog.matches_response(&message::response_to(&reinvite, 200, None)));
    }

    #[test]
    fn ack_for_2xx_reuses_the_invite_cseq_and_a_new_branch() {
        let dialog = uac_dialog();
        let ack = dialog.build_ack(102, via()).unwrap();
        assert_eq!(
            ack.cseq().unwrap(),
            CSeq {
                seq: 102,
                method: Method::Ack
            }
        );
        assert_ne!(ack.branch(), invite_to_pbx().branch());
        assert_eq!(ack.route().unwrap().len(), 2);
        assert_eq!(
            dialog.local_seq(),
            Some(102),
            "ACK does not consume a CSeq number"
        );
        let mut dialog = dialog;
        assert_eq!(
            dialog.build_request(Method::Ack, via()),
            Err(DialogError::WrongMethod(Method::Ack))
        );
    }

    #[test]
    fn early_uac_dialog_is_confirmed_by_the_2xx_which_resets_routes_and_target() {
        let invite = invite_to_pbx();
        let mut ringing = message::response_to(&invite, 180, Some("9f0e1d2c-3b4a-5968-7a6b-5c4d3e2f1a0b"));
        ringing.push_header("Record-Route", "<sip:192.0.2.1;lr>");
        let mut dialog = Dialog::uac(&invite, &ringing).unwrap();
        assert_eq!(dialog.state(), DialogState::Early);
        assert_eq!(
            dialog.remote_target(),
            &invite.uri,
            "no Contact in the 180: the Request-URI"
        );
        dialog
            .handle_response(&response(&wire(fixtures::ASTERISK_200)))
            .unwrap();
        assert_eq!(dialog.state(), DialogState::Confirmed);
        assert_eq!(dialog.route_set().len(), 2);
        assert_eq!(dialog.remote_target().to_string(), "sip:192.0.2.20:5060");
        let other_fork = message::response_to(&invite, 200, Some("another-tag"));
        assert_eq!(dialog.handle_response(&other_fork), Err(DialogError::Mismatch));
    }

    fn jssip_invite() -> Request {
        let mut invite = request(&wire(fixtures::JSSIP_INVITE));
        invite.push_header("Record-Route", "<sip:edge1.example;lr>");
        invite.push_header("Record-Route", "<sip:edge2.example;lr>");
        invite
    }

    fn uas_dialog() -> (Request, Dialog) {
        let invite = jssip_invite();
        let contact = NameAddr::new("sip:callgate@gw.example.com;transport=ws");
        let ok = uas_response(&invite, 200, "gwtag", &contact);
        let dialog = Dialog::uas(&invite, &ok).unwrap();
        (invite, dialog)
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_targets_the_browser_contact() {
        let (_, dialog) = uas_dialog();
        assert_eq!(dialog.side(), DialogSide::Uas);
        assert_eq!(dialog.state(), DialogState::Confirmed);
        assert_eq!(dialog.id().local_tag, "gwtag");
        assert_eq!(dialog.id().remote_tag, "j5vp0l1bd1");
        assert_eq!(
            dialog.remote_target().to_string(),
            "sip:k9qf2ohc@8sf2hg3lpc2l.invalid;transport=WS;ob"
        );
        let routes: Vec<&str> = dialog
            .route_set()
            .iter()
            .map(|route| route.uri.as_str())
            .collect();
        assert_eq!(routes, ["sip:edge1.example;lr", "sip:edge2.example;lr"]);
        assert_eq!((dialog.remote_seq(), dialog.local_seq()), (Some(8046), None));
    }

    #[test]
    fn uas_requests_swap_from_and_to_and_start_their_own_cseq() {
        let (invite, mut dialog) = uas_dialog();
        let bye = dialog.build_request(Method::Bye, via()).unwrap();
        assert_eq!(bye.from_tag().as_deref(), Some("gwtag"));
        assert_eq!(bye.to_tag().as_deref(), Some("j5vp0l1bd1"));
        assert_eq!(bye.from_addr().unwrap().uri, invite.to_addr().unwrap().uri);
        assert_eq!(
            bye.to_addr().unwrap().display_name.as_deref(),
            Some("Website visitor")
        );
        assert_eq!(bye.cseq().unwrap().seq, 1);
        assert_eq!(
            bye.uri.to_string(),
            "sip:k9qf2ohc@8sf2hg3lpc2l.invalid;transport=WS;ob"
        );
        assert_eq!(bye.route().unwrap().len(), 2);
    }

    /// An in-dialog request from the browser, built from our own dialog's point of view reversed.
    fn from_browser(invite: &Request, method: &str, seq: u32, extra: &str) -> Request {
        let text = format!(
            "{method} sip:callgate@gw.example.com;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/WSS 8sf2hg3lpc2l.invalid;branch=z9hG4bK{seq}{method}\r\nMax-Forwards: 70\r\n\
             To: <sip:w_3f9a2c7b@gw.example.com>;tag=gwtag\r\nFrom: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\n\
             {extra}\r\n",
            invite.header_value("From").unwrap(),
            invite.call_id().unwrap()
        );
        request(text.as_bytes())
    }

    #[test]
    fn incoming_requests_are_checked_for_cseq_order_and_refresh_the_target() {
        let (invite, mut dialog) = uas_dialog();
        let info = from_browser(&invite, "INFO", 8047, "");
        assert!(dialog.matches(&info));
        dialog.handle_request(&info).unwrap();
        assert_eq!(dialog.remote_seq(), Some(8047));
        let late = from_browser(&invite, "INFO", 8040, "");
        assert_eq!(
            dialog.handle_request(&late),
            Err(DialogError::CSeqOutOfOrder {
                received: 8040,
                last: 8047
            })
        );
        let reinvite = from_browser(
            &invite,
            "INVITE",
            8048,
            "Contact: <sip:new@8sf2hg3lpc2l.invalid;transport=ws>\r\n",
        );
        dialog.handle_request(&reinvite).unwrap();
        assert_eq!(
            dialog.remote_target().to_string(),
            "sip:new@8sf2hg3lpc2l.invalid;transport=WS"
        );
        let update = from_browser(
            &invite,
            "UPDATE",
            8049,
            "Contact: <sip:newer@8sf2hg3lpc2l.invalid>\r\n",
        );
        dialog.handle_request(&update).unwrap();
        assert_eq!(
            dialog.remote_target().to_string(),
            "sip:newer@8sf2hg3lpc2l.invalid"
        );
        let info_with_contact = from_browser(&invite, "INFO", 8050, "Contact: <sip:ignored@x.invalid>\r\n");
        dialog.handle_request(&info_with_contact).unwrap();
        assert_eq!(
            dialog.remote_target().to_string(),
            "sip:newer@8sf2hg3lpc2l.invalid",
            "INFO refreshes nothing"
        );
        let ack = from_browser(&invite, "ACK", 8046, "");
        dialog.handle_request(&ack).unwrap();
        assert_eq!(
            dialog.remote_seq(),
            Some(8050),
            "ACK carries the INVITE's CSeq and is not checked"
        );
    }

    #[test]
    fn requests_of_other_dialogs_do_not_match() {
        let (invite, mut dialog) = uas_dialog();
        let mut wrong_tag = from_browser(&invite, "BYE", 9000, "");
        wrong_tag.set_header("To", "<sip:w_3f9a2c7b@gw.example.com>;tag=other");
        assert!(!dialog.matches(&wrong_tag));
        assert_eq!(dialog.handle_request(&wrong_tag), Err(DialogError::Mismatch));
        let mut wrong_call = from_browser(&invite, "BYE", 9000, "");
        wrong_call.set_header("Call-ID", "other");
        assert!(!dialog.matches(&wrong_call));
    }

    #[test]
    fn strict_route_goes_into_the_request_uri_and_the_target_becomes_the_last_route() {
        let invite = invite_to_pbx();
        let mut ok = message::response_to(&invite, 200, Some("pbx"));
        ok.push_header("Record-Route", "<sip:loose.example;lr>");
        ok.push_header("Record-Route", "<sip:strict.example;maddr=192.0.2.99>");
        ok.push_header("Contact", "<sip:2001@192.0.2.20:5060>");
        let mut dialog = Dialog::uac(&invite, &ok).unwrap();
        let bye = dialog.build_request(Method::Bye, via()).unwrap();
        assert_eq!(bye.uri.to_string(), "sip:strict.example");
        let routes: Vec<String> = bye.route().unwrap().into_iter().map(|route| route.uri).collect();
        assert_eq!(routes, ["sip:loose.example;lr", "sip:2001@192.0.2.20:5060"]);
    }

    #[test]
    fn dialogs_need_a_tagged_101_to_299_and_a_contact_on_the_uas_side() {
        let invite = invite_to_pbx();
        let trying = message::response_to(&invite, 100, None);
        assert_eq!(
            Dialog::uac(&invite, &trying),
            Err(DialogError::NotDialogCreating(100))
        );
        let untagged = message::response_to(&invite, 180, None);
        assert_eq!(
            Dialog::uac(&invite, &untagged),
            Err(DialogError::MissingTag("To"))
        );
        let busy = message::response_to(&invite, 486, Some("x"));
        assert_eq!(
            Dialog::uac(&invite, &busy),
            Err(DialogError::NotDialogCreating(486))
        );
        let mut no_contact = jssip_invite();
        no_contact.remove_header("Contact");
        let ok = message::response_to(&no_contact, 200, Some("gwtag"));
        assert_eq!(Dialog::uas(&no_contact, &ok), Err(DialogError::MissingContact));
    }

    #[test]
    fn uas_early_dialog_is_confirmed_when_we_send_the_2xx_and_sips_is_secure() {
        let mut invite = jssip_invite();
        invite.uri = message::parse_uri("sips:w_3f9a2c7b@gw.example.com").unwrap();
        let ringing = uas_response(
            &invite,
            180,
            "gwtag",
            &NameAddr::new("sips:callgate@gw.example.com"),
        );
        let mut dialog = Dialog::uas(&invite, &ringing).unwrap();
        assert_eq!(dialog.state(), DialogState::Early);
        assert!(dialog.is_secure());
        dialog.confirm();
        assert_eq!(dialog.state(), DialogState::Confirmed);
    }
}
