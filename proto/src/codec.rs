//! The gRPC codec of kosmos.attest.v1: prost, with buffers sized for this
//! protocol instead of tonic's defaults.
//!
//! A collector holds one Attest stream per node for hours, mostly idle, and
//! each stream keeps its codec buffers for its whole life: with tonic's
//! default 8 KiB each, an idle fleet of 10,000 nodes pins about 160 MiB in
//! encode and decode buffers alone. Acks are a few bytes and an envelope
//! grows its decode buffer to its own size when one arrives, so both start
//! small here. The yield threshold (how much is decoded before yielding to
//! the runtime) stays tonic's.

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode buffer: an Ack or an EnrollResponse header fits, a larger
/// message grows it.
const ENCODE_BUFFER: usize = 256;
/// Initial decode buffer: what one read usually brings before a message's
/// length is known.
const DECODE_BUFFER: usize = 1024;
/// tonic's default yield threshold.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding and decoding with small initial buffers.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(DECODE_BUFFER, YIELD_THRESHOLD))
    }
}
