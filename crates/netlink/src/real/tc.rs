//! Traffic control on a [`Netlink`] socket: a token bucket filter (`tbf`)
//! as a link's root qdisc, for rate limits (the CNI plugin's `bandwidth`
//! capability). rtnetlink builds no tbf options, so the message is made
//! here: `TCA_TBF_PARMS` (the rate, the queue limit), `TCA_TBF_BURST` (the
//! bucket, which the kernel turns into its time buffer itself) and
//! `TCA_TBF_RATE64` for rates of 4 GiB/s and more.

use futures_util::stream::StreamExt;
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::Netlink;
use crate::error::nl_err;
use crate::RtnlError;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `TC_LINKLAYER_ETHERNET`: the kernel computes the rate table itself.
const LINKLAYER_ETHERNET: u8 = 1;

/// `struct tc_tbf_qopt` for `rate` bytes/s (the low 32 bits; the rest in
/// `TCA_TBF_RATE64`) and a queue of `limit` bytes: two `tc_ratespec`s (rate,
/// no peak rate), limit, buffer (set from `TCA_TBF_BURST`), mtu.
pub(crate) fn tbf_qopt(rate: u64, limit: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(36);
    // rate: cell_log, linklayer, overhead, cell_align, mpu, rate.
    b.extend_from_slice(&[0, LINKLAYER_ETHERNET]);
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&(-1i16).to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    // peakrate: none.
    b.extend_from_slice(&[0u8; 12]);
    b.extend_from_slice(&limit.to_ne_bytes());
    // buffer: replaced by the kernel from TCA_TBF_BURST; mtu: none.
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b
}

impl Netlink {
    /// Makes a tbf at `rate` bytes/s with a bucket of `burst` bytes and a
    /// queue of `limit` bytes the root qdisc of link `index` (replacing the
    /// one there).
    pub fn set_tbf(
        &mut self,
        index: u32,
        rate: u64,
        burst: u32,
        limit: u32,
    ) -> Result<(), RtnlError> {
        let what = format!("add a tbf qdisc to link {index}");
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::ROOT;
        msg.header.handle = TcHandle { major: 1, minor: 0 };
        msg.attributes.push(TcAttribute::Kind("tbf".into()));
        let mut opts = vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, tbf_qopt(rate, limit))),
            TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
        ];
        if rate > u64::from(u32::MAX) {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                rate.to_ne_bytes().to_vec(),
            )));
        }
        msg.attributes.push(TcAttribute::Options(opts));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut h = self.handle.clone();
        self.run(async move {
            let mut answers = h.request(req)?;
            while let Some(m) = answers.next().await {
                if let NetlinkPayload::Error(e) = m.payload {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
            Ok(())
        })
        .map_err(nl_err(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qopt_layout() {
        let b = tbf_qopt(125_000, 10_000);
        assert_eq!(b.len(), 36);
        assert_eq!(b[1], LINKLAYER_ETHERNET);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 125_000);
        assert_eq!(&b[12..24], &[0; 12]);
        assert_eq!(u32::from_ne_bytes(b[24..28].try_into().unwrap()), 10_000);
        let big = tbf_qopt(1 << 40, 1);
        assert_eq!(u32::from_ne_bytes(big[8..12].try_into().unwrap()), u32::MAX);
    }
}
