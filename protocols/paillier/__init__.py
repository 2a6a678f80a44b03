"""Packed, threshold-decrypted Paillier aggregation.

Clients pack their quantized vectors many values per plaintext (BatchCrypt
style), encrypt under one public key and sign; the aggregator multiplies the
ciphertexts; key holders decrypt only the aggregate of enough signed
contributions. Two deployments: ``threshold`` (t-of-m key holders, none can
decrypt alone; trusted-dealer key generation) and ``two_party`` (one
decryptor holding the whole key, which only ever sees the aggregate).

One module per party (:mod:`.client`, :mod:`.aggregator`, :mod:`.key_holder`),
their legal moves in one table (:mod:`.states`), the wire messages in
:mod:`.messages`; :mod:`.session` keeps the parties' original import path.

phe and gmpy2 are imported on first use, never at import time. See
docs/protocols/paillier.md for the threat model.
"""

from .aggregator import AggregationResult, PaillierAggregator
from .client import PaillierClient
from .driver import (
    STAGES,
    PaillierDeployment,
    PaillierSecureSum,
    SessionOutcome,
    run_session,
)
from .encryption import (
    RANDOMIZER_MODES,
    FixedBaseRandomizers,
    RandomizerPool,
    add_ciphertexts,
    check_ciphertext,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    encrypt_packed,
)
from .errors import (
    ForeignKey,
    InsecureKeySize,
    InvalidCiphertext,
    InvalidPartialDecryption,
    PoolExhausted,
    SlotOverflow,
    UnknownParty,
)
from .key_holder import ThresholdKeyHolder, TwoPartyDecryptor
from .keys import (
    DEFAULT_KEY_BITS,
    MIN_SECURE_KEY_BITS,
    PaillierPrivateKey,
    PaillierPublicKey,
    check_key_size,
    generate_keypair,
)
from .messages import Mode, SessionParams, key_holder_id
from .packing import PackingLayout, headroom_for
from .states import AggregatorState, ClientState, KeyHolderState
from .threshold import (
    KeyShare,
    PartialDecryption,
    ThresholdKeySet,
    ThresholdParams,
    combine_partials,
    deal_threshold_keys,
    generate_safe_prime,
    partial_decrypt,
    verify_partial,
)

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_SECURE_KEY_BITS",
    "RANDOMIZER_MODES",
    "STAGES",
    "AggregationResult",
    "AggregatorState",
    "ClientState",
    "FixedBaseRandomizers",
    "ForeignKey",
    "InsecureKeySize",
    "InvalidCiphertext",
    "InvalidPartialDecryption",
    "KeyHolderState",
    "KeyShare",
    "Mode",
    "PackingLayout",
    "PaillierAggregator",
    "PaillierClient",
    "PaillierDeployment",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "PaillierSecureSum",
    "PartialDecryption",
    "PoolExhausted",
    "RandomizerPool",
    "SessionOutcome",
    "SessionParams",
    "SlotOverflow",
    "ThresholdKeyHolder",
    "ThresholdKeySet",
    "ThresholdParams",
    "TwoPartyDecryptor",
    "UnknownParty",
    "add_ciphertexts",
    "check_ciphertext",
    "check_key_size",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "combine_partials",
    "deal_threshold_keys",
    "encrypt_packed",
    "generate_keypair",
    "generate_safe_prime",
    "headroom_for",
    "key_holder_id",
    "partial_decrypt",
    "run_session",
    "verify_partial",
]
