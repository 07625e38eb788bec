;; Shared prelude of rillet's example SmartModules: Fluvio's SmartModule ABI in WAT.
;;
;; The host calls alloc(len), writes the encoded input there, then calls the transform
;; fn(ptr, len, version) -> i32; the module hands its encoded output back with
;; env.copy_records(ptr, len) and returns the number of records in it, or a negative status
;; without output: -11 the input does not decode; -22 (aggregate only, as in Fluvio's generated
;; code) its records do not decode. Encoding (Fluvio's, big-endian fixed-width integers):
;;   SmartModuleInput   base_offset i64, raw_bytes Vec<u8> (u32 count + Records), then up to v22
;;                      params (u16 count, String pairs; from v20 a lookback Option), from v16
;;                      join_record Vec<u8>, from v22 base_timestamp i64
;;   Record             varint length, attributes i8, timestamp delta varint, offset delta
;;                      varint, key Option<varint-length bytes>, value varint-length bytes,
;;                      header count varint (+ headers, skipped: the record length bounds them)
;;   SmartModuleOutput  Vec<Record> (u32 count), error Option<TransformRuntimeError: hint
;;                      String, offset i64, kind u8, key Option<RecordData>, value RecordData>
;; varints are zigzag, 7 bits a byte, low group first.
;;
;; Memory: 0..255 the prelude's constant strings, 256..511 a scratch area for error hints,
;; 512..4095 the module's own constants, 4096.. the heap.

  (import "env" "copy_records" (func $copy_records (param i32 i32)))
  (memory (export "memory") 1)
  (global (export "__data_end") i32 (i32.const 4096))
  (global (export "__heap_base") i32 (i32.const 4096))

  (data (i32.const 0) "invalid utf-8 sequence of ")          ;; 26 bytes
  (data (i32.const 32) " bytes from index ")                 ;; 18 bytes
  (data (i32.const 64) "incomplete utf-8 byte sequence from index ")  ;; 42 bytes

  ;; --- heap ---------------------------------------------------------------------------
  ;; The host calls alloc once before each call, for that call's input; whatever an earlier call
  ;; allocated is garbage by then (copy_records copied its output at once), so the heap restarts
  ;; at $floor each time: memory stays the size of one call. init raises $floor over what it keeps.
  (global $floor (mut i32) (i32.const 4096))
  (global $heap (mut i32) (i32.const 4096))

  (func $take (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    ;; grow to cover the new end; a refused grow traps (as Rust's allocator aborts)
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.sub
                      (i32.shr_u (i32.add (global.get $heap) (i32.const 65535)) (i32.const 16))
                      (memory.size)))
                    (i32.const -1))
          (then unreachable))))
    (local.get $p))

  (func (export "alloc") (param $n i32) (result i32)
    (global.set $heap (global.get $floor))
    (call $take (local.get $n)))

  (func (export "dealloc") (param i32 i32))

  ;; --- reading: a cursor $pos bounded by $end; an overrun sets $bad and reads 0 -------------
  (global $pos (mut i32) (i32.const 0))
  (global $end (mut i32) (i32.const 0))
  (global $bad (mut i32) (i32.const 0))

  (func $need (param $n i32) (result i32)     ;; 1 when n more bytes are there
    (if (i32.or (i32.lt_s (local.get $n) (i32.const 0))
                (i32.gt_u (i32.add (global.get $pos) (local.get $n)) (global.get $end)))
      (then (global.set $bad (i32.const 1)) (return (i32.const 0))))
    (i32.const 1))

  (func $u8 (result i32)
    (local $v i32)
    (if (i32.eqz (call $need (i32.const 1))) (then (return (i32.const 0))))
    (local.set $v (i32.load8_u (global.get $pos)))
    (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
    (local.get $v))

  (func $u16 (result i32)
    (i32.or (i32.shl (call $u8) (i32.const 8)) (call $u8)))

  (func $u32 (result i32)
    (i32.or (i32.shl (call $u16) (i32.const 16)) (call $u16)))

  (func $i64 (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (call $u32)) (i64.const 32)) (i64.extend_i32_u (call $u32))))

  (func $skip (param $n i32)
    (if (call $need (local.get $n))
      (then (global.set $pos (i32.add (global.get $pos) (local.get $n))))))

  (func $varint (result i64)                  ;; zigzag varint, at most 10 bytes
    (local $b i32) (local $v i64) (local $shift i64)
    (loop $more
      (local.set $b (call $u8))
      (local.set $v (i64.or (local.get $v)
        (i64.shl (i64.extend_i32_u (i32.and (local.get $b) (i32.const 0x7f))) (local.get $shift))))
      (local.set $shift (i64.add (local.get $shift) (i64.const 7)))
      (if (i32.and (local.get $b) (i32.const 0x80))
        (then
          (if (i64.gt_u (local.get $shift) (i64.const 63))
            (then (global.set $bad (i32.const 1)) (return (i64.const 0))))
          (br $more))))
    (i64.xor (i64.shr_u (local.get $v) (i64.const 1))
             (i64.sub (i64.const 0) (i64.and (local.get $v) (i64.const 1)))))

  ;; --- the input ----------------------------------------------------------------------
  ;; As Fluvio's generated code, the whole input is decoded before any record is processed, so
  ;; input that does not decode gives a status and no output at all.
  (global $version (mut i32) (i32.const 0))
  (global $base (mut i64) (i64.const 0))      ;; base_offset
  (global $left (mut i32) (i32.const 0))      ;; records not read yet
  (global $raw (mut i32) (i32.const 0))       ;; the records: [$raw, $raw_end)
  (global $raw_end (mut i32) (i32.const 0))
  (global $tail (mut i32) (i32.const 0))      ;; what follows the input (an aggregate's accumulator)
  (global $in_end (mut i32) (i32.const 0))

  ;; Decodes the SmartModuleInput at [ptr, ptr+len) around its records (checked by $records_ok).
  ;; 0 when it does not decode.
  (func $input (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $raw_len i32)
    (global.set $version (local.get $version))
    (global.set $bad (i32.const 0))
    (global.set $pos (local.get $ptr))
    (global.set $end (i32.add (local.get $ptr) (local.get $len)))
    (global.set $in_end (global.get $end))
    (global.set $base (call $i64))
    (local.set $raw_len (call $u32))
    (global.set $raw (global.get $pos))
    (call $skip (local.get $raw_len))
    (global.set $raw_end (global.get $pos))
    ;; up to v22 the params (a BTreeMap<String, String>; from v20 a lookback Option, which the
    ;; host never sets); v16 to v22 the join record; from v22 the base timestamp
    (if (i32.le_s (local.get $version) (i32.const 22)) (then (call $params_skip)))
    (if (i32.and (i32.ge_s (local.get $version) (i32.const 16)) (i32.le_s (local.get $version) (i32.const 22)))
      (then (call $skip (call $u32))))
    (if (i32.ge_s (local.get $version) (i32.const 22)) (then (drop (call $i64))))
    (global.set $tail (global.get $pos))
    (i32.eqz (global.get $bad)))

  (func $string_skip (call $skip (call $u16)))

  (func $params_skip
    (local $n i32)
    (local.set $n (call $u16))
    (block $done (loop $pair
      (br_if $done (i32.or (i32.eqz (local.get $n)) (global.get $bad)))
      (call $string_skip) (call $string_skip)
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $pair)))
    (if (i32.ge_s (global.get $version) (i32.const 20))
      (then (if (call $u8) (then (global.set $bad (i32.const 1)))))))

  ;; Decodes every record once (Vec<Record>: u32 count, records), then leaves $pos on the first
  ;; for $next_record. 0 when they do not decode.
  (func $records_ok (result i32)
    (local $count i32)
    (global.set $pos (global.get $raw))
    (global.set $end (global.get $raw_end))
    (local.set $count (call $u32))
    (global.set $left (local.get $count))
    (block $done (loop $each
      (br_if $done (i32.eqz (call $next_record)))
      (br $each)))
    (global.set $pos (i32.add (global.get $raw) (i32.const 4)))
    (global.set $left (local.get $count))
    (i32.eqz (global.get $bad)))

  ;; The head of every transform but aggregate: -11 when the input or its records do not decode
  ;; (Fluvio's generated code reports both as DecodingBaseInput), else 0 and $pos on the records.
  (func $open (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (if (i32.eqz (call $input (local.get $ptr) (local.get $len) (local.get $version)))
      (then (return (i32.const -11))))
    (if (i32.eqz (call $records_ok)) (then (return (i32.const -11))))
    (i32.const 0))

  ;; --- records in ---------------------------------------------------------------------
  (global $attr (mut i32) (i32.const 0))
  (global $ts (mut i64) (i64.const 0))        ;; timestamp delta
  (global $od (mut i64) (i64.const 0))        ;; offset delta
  (global $kptr (mut i32) (i32.const 0))
  (global $klen (mut i32) (i32.const -1))     ;; -1: no key
  (global $vptr (mut i32) (i32.const 0))
  (global $vlen (mut i32) (i32.const 0))

  ;; 1 and the next record in the globals above, or 0 at the end; $bad when it does not decode
  (func $next_record (result i32)
    (local $len i32) (local $rec_end i32)
    (if (i32.eqz (global.get $left)) (then (return (i32.const 0))))
    (global.set $left (i32.sub (global.get $left) (i32.const 1)))
    (global.set $end (global.get $raw_end))
    ;; lengths are cut to 32 bits, as usize is on wasm32 in Fluvio's modules
    (local.set $len (i32.wrap_i64 (call $varint)))
    (if (i32.eqz (call $need (local.get $len))) (then (return (i32.const 0))))
    (local.set $rec_end (i32.add (global.get $pos) (local.get $len)))
    (global.set $end (local.get $rec_end))     ;; the fields must fit in the record
    (global.set $attr (call $u8))
    (global.set $ts (call $varint))
    (global.set $od (call $varint))
    (global.set $klen (i32.const -1))
    (if (call $u8)
      (then
        (global.set $klen (i32.wrap_i64 (call $varint)))
        (global.set $kptr (global.get $pos))
        (call $skip (global.get $klen))))
    (global.set $vlen (i32.wrap_i64 (call $varint)))
    (global.set $vptr (global.get $pos))
    (call $skip (global.get $vlen))
    (global.set $pos (local.get $rec_end))
    (global.set $end (global.get $raw_end))
    (i32.eqz (global.get $bad)))

  ;; --- writing the output at the heap's end ---------------------------------------------
  (global $out (mut i32) (i32.const 0))       ;; where the output starts
  (global $count (mut i32) (i32.const 0))     ;; records written

  (func $w_u8 (param $v i32) (i32.store8 (call $take (i32.const 1)) (local.get $v)))
  (func $w_u16 (param $v i32) (call $w_u8 (i32.shr_u (local.get $v) (i32.const 8))) (call $w_u8 (local.get $v)))
  (func $w_u32 (param $v i32) (call $w_u16 (i32.shr_u (local.get $v) (i32.const 16))) (call $w_u16 (local.get $v)))
  (func $w_i64 (param $v i64)
    (call $w_u32 (i32.wrap_i64 (i64.shr_u (local.get $v) (i64.const 32))))
    (call $w_u32 (i32.wrap_i64 (local.get $v))))
  (func $w_bytes (param $ptr i32) (param $len i32)
    (memory.copy (call $take (local.get $len)) (local.get $ptr) (local.get $len)))

  (func $zigzag (param $v i64) (result i64)
    (i64.xor (i64.shl (local.get $v) (i64.const 1)) (i64.shr_s (local.get $v) (i64.const 63))))

  (func $varint_size (param $v i64) (result i32)
    (local $z i64) (local $n i32)
    (local.set $z (call $zigzag (local.get $v)))
    (local.set $n (i32.const 1))
    (block $done (loop $more
      (br_if $done (i64.lt_u (local.get $z) (i64.const 0x80)))
      (local.set $z (i64.shr_u (local.get $z) (i64.const 7)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $more)))
    (local.get $n))

  (func $w_varint (param $v i64)
    (local $z i64)
    (local.set $z (call $zigzag (local.get $v)))
    (block $done (loop $more
      (br_if $done (i64.lt_u (local.get $z) (i64.const 0x80)))
      (call $w_u8 (i32.or (i32.wrap_i64 (i64.and (local.get $z) (i64.const 0x7f))) (i32.const 0x80)))
      (local.set $z (i64.shr_u (local.get $z) (i64.const 7)))
      (br $more)))
    (call $w_u8 (i32.wrap_i64 (local.get $z))))

  (func $w_data (param $ptr i32) (param $len i32)   ;; RecordData: varint length, bytes
    (call $w_varint (i64.extend_i32_s (local.get $len)))
    (call $w_bytes (local.get $ptr) (local.get $len)))

  (func $out_begin                             ;; the record count is patched in by $out_records
    (global.set $out (call $take (i32.const 4)))
    (global.set $count (i32.const 0)))

  ;; One output record: attributes $attr, the given deltas and key (klen -1: none), and as value
  ;; the bytes v1 followed by v2 (an aggregate's accumulator and the new value). Returns where
  ;; the value landed in the output.
  (func $emit (param $ts i64) (param $od i64) (param $kptr i32) (param $klen i32)
              (param $v1 i32) (param $v1len i32) (param $v2 i32) (param $v2len i32) (result i32)
    (local $vlen i32) (local $size i32) (local $at i32)
    (local.set $vlen (i32.add (local.get $v1len) (local.get $v2len)))
    (local.set $size (i32.add (i32.const 2)           ;; attributes, header count
      (i32.add (i32.add (call $varint_size (local.get $ts)) (call $varint_size (local.get $od)))
               (i32.add (call $varint_size (i64.extend_i32_s (local.get $vlen))) (local.get $vlen)))))
    (local.set $size (i32.add (local.get $size) (i32.const 1)))   ;; key flag
    (if (i32.ge_s (local.get $klen) (i32.const 0))
      (then (local.set $size (i32.add (local.get $size)
              (i32.add (call $varint_size (i64.extend_i32_s (local.get $klen))) (local.get $klen))))))
    (call $w_varint (i64.extend_i32_s (local.get $size)))
    (call $w_u8 (global.get $attr))
    (call $w_varint (local.get $ts))
    (call $w_varint (local.get $od))
    (if (i32.lt_s (local.get $klen) (i32.const 0))
      (then (call $w_u8 (i32.const 0)))
      (else (call $w_u8 (i32.const 1)) (call $w_data (local.get $kptr) (local.get $klen))))
    (call $w_varint (i64.extend_i32_s (local.get $vlen)))
    (local.set $at (global.get $heap))
    (call $w_bytes (local.get $v1) (local.get $v1len))
    (call $w_bytes (local.get $v2) (local.get $v2len))
    (call $w_u8 (i32.const 0))                        ;; no headers
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (local.get $at))

  ;; The record just read, unchanged
  (func $emit_record
    (drop (call $emit (global.get $ts) (global.get $od) (global.get $kptr) (global.get $klen)
                      (global.get $vptr) (global.get $vlen) (i32.const 0) (i32.const 0))))

  (func $out_records                           ;; patch the record count in (big-endian)
    (i32.store8 (global.get $out) (i32.shr_u (global.get $count) (i32.const 24)))
    (i32.store8 offset=1 (global.get $out) (i32.shr_u (global.get $count) (i32.const 16)))
    (i32.store8 offset=2 (global.get $out) (i32.shr_u (global.get $count) (i32.const 8)))
    (i32.store8 offset=3 (global.get $out) (global.get $count)))

  ;; The error of the record just read (the module's Err): hint, its absolute offset, the kind
  ;; tag (0 Filter, 1 Map, 2 ArrayMap, 3 Aggregate, 4 FilterMap), its key and value.
  (func $w_error (param $hint i32) (param $hint_len i32) (param $kind i32)
    (call $w_u8 (i32.const 1))
    (call $w_u16 (local.get $hint_len))
    (call $w_bytes (local.get $hint) (local.get $hint_len))
    (call $w_i64 (i64.add (global.get $base) (global.get $od)))
    (call $w_u8 (local.get $kind))
    (if (i32.lt_s (global.get $klen) (i32.const 0))
      (then (call $w_u8 (i32.const 0)))
      (else (call $w_u8 (i32.const 1)) (call $w_data (global.get $kptr) (global.get $klen))))
    (call $w_data (global.get $vptr) (global.get $vlen)))

  (func $send (result i32)                     ;; hand the output to the host; the status is the record count
    (call $copy_records (global.get $out) (i32.sub (global.get $heap) (global.get $out)))
    (global.get $count))

  ;; Output of a filter/map-like call that stopped at record error $hint (or ran through when
  ;; $hint_len is -1).
  (func $finish (param $hint i32) (param $hint_len i32) (param $kind i32) (result i32)
    (call $out_records)
    (if (i32.lt_s (local.get $hint_len) (i32.const 0))
      (then (call $w_u8 (i32.const 0)))
      (else (call $w_error (local.get $hint) (local.get $hint_len) (local.get $kind))))
    (call $send))

  ;; --- error hints: built in the scratch area at 256 --------------------------------------
  (global $s (mut i32) (i32.const 256))

  (func $s_bytes (param $ptr i32) (param $len i32)
    (memory.copy (global.get $s) (local.get $ptr) (local.get $len))
    (global.set $s (i32.add (global.get $s) (local.get $len))))

  (func $s_decimal (param $v i32)              ;; unsigned decimal
    (local $digits i32) (local $t i32)
    (local.set $t (local.get $v))
    (local.set $digits (i32.const 1))
    (block $done (loop $count
      (br_if $done (i32.lt_u (local.get $t) (i32.const 10)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
      (br $count)))
    (global.set $s (i32.add (global.get $s) (local.get $digits)))
    (local.set $t (global.get $s))
    (loop $digit
      (local.set $t (i32.sub (local.get $t) (i32.const 1)))
      (i32.store8 (local.get $t) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v))))

  ;; --- UTF-8 as Rust's std::str::from_utf8 checks it -------------------------------------
  ;; -1 when [ptr, ptr+len) is UTF-8; else the length of its valid prefix, with $utf8_bad set to
  ;; the length of the bad sequence (1 to 3), or 0 when the input ends inside a sequence.
  (global $utf8_bad (mut i32) (i32.const 0))

  (func $cont (param $p i32) (param $end i32) (result i32)   ;; a continuation byte at p? (-1: past the end)
    (if (i32.ge_u (local.get $p) (local.get $end)) (then (return (i32.const -1))))
    (i32.eq (i32.and (i32.load8_u (local.get $p)) (i32.const 0xc0)) (i32.const 0x80)))

  (func $utf8 (param $ptr i32) (param $len i32) (result i32)
    (local $i i32) (local $end i32) (local $b i32) (local $n i32) (local $lo i32) (local $hi i32) (local $c i32) (local $k i32)
    (local.set $i (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $valid (loop $char
      (br_if $valid (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $b (i32.load8_u (local.get $i)))
      (if (i32.lt_u (local.get $b) (i32.const 0x80))
        (then (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $char)))
      ;; width and the allowed range of the second byte (no overlongs, no surrogates, <= U+10FFFF)
      (local.set $lo (i32.const 0x80)) (local.set $hi (i32.const 0xbf))
      (if (i32.and (i32.ge_u (local.get $b) (i32.const 0xc2)) (i32.le_u (local.get $b) (i32.const 0xdf)))
        (then (local.set $n (i32.const 2)))
        (else (if (i32.and (i32.ge_u (local.get $b) (i32.const 0xe0)) (i32.le_u (local.get $b) (i32.const 0xef)))
          (then (local.set $n (i32.const 3))
                (if (i32.eq (local.get $b) (i32.const 0xe0)) (then (local.set $lo (i32.const 0xa0))))
                (if (i32.eq (local.get $b) (i32.const 0xed)) (then (local.set $hi (i32.const 0x9f)))))
          (else (if (i32.and (i32.ge_u (local.get $b) (i32.const 0xf0)) (i32.le_u (local.get $b) (i32.const 0xf4)))
            (then (local.set $n (i32.const 4))
                  (if (i32.eq (local.get $b) (i32.const 0xf0)) (then (local.set $lo (i32.const 0x90))))
                  (if (i32.eq (local.get $b) (i32.const 0xf4)) (then (local.set $hi (i32.const 0x8f)))))
            (else (global.set $utf8_bad (i32.const 1)) (return (i32.sub (local.get $i) (local.get $ptr)))))))))
      ;; second byte
      (if (i32.ge_u (i32.add (local.get $i) (i32.const 1)) (local.get $end))
        (then (global.set $utf8_bad (i32.const 0)) (return (i32.sub (local.get $i) (local.get $ptr)))))
      (local.set $c (i32.load8_u (i32.add (local.get $i) (i32.const 1))))
      (if (i32.or (i32.lt_u (local.get $c) (local.get $lo)) (i32.gt_u (local.get $c) (local.get $hi)))
        (then (global.set $utf8_bad (i32.const 1)) (return (i32.sub (local.get $i) (local.get $ptr)))))
      ;; third and fourth: any continuation byte
      (local.set $k (i32.const 2))
      (block $seq_done (loop $rest
        (br_if $seq_done (i32.ge_u (local.get $k) (local.get $n)))
        (local.set $c (call $cont (i32.add (local.get $i) (local.get $k)) (local.get $end)))
        (if (i32.eq (local.get $c) (i32.const -1))
          (then (global.set $utf8_bad (i32.const 0)) (return (i32.sub (local.get $i) (local.get $ptr)))))
        (if (i32.eqz (local.get $c))
          (then (global.set $utf8_bad (local.get $k)) (return (i32.sub (local.get $i) (local.get $ptr)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $rest)))
      (local.set $i (i32.add (local.get $i) (local.get $n)))
      (br $char)))
    (i32.const -1))

  ;; The hint of a failed $utf8 (Rust's Utf8Error text) in the scratch area; returns its length
  (func $utf8_hint (param $valid_up_to i32) (result i32)
    (global.set $s (i32.const 256))
    (if (global.get $utf8_bad)
      (then
        (call $s_bytes (i32.const 0) (i32.const 26))
        (call $s_decimal (global.get $utf8_bad))
        (call $s_bytes (i32.const 32) (i32.const 18)))
      (else (call $s_bytes (i32.const 64) (i32.const 42))))
    (call $s_decimal (local.get $valid_up_to))
    (i32.sub (global.get $s) (i32.const 256)))

  ;; 1 when [ptr, ptr+len) contains [nptr, nptr+nlen) (the empty needle is everywhere)
  (func $contains (param $ptr i32) (param $len i32) (param $nptr i32) (param $nlen i32) (result i32)
    (local $i i32) (local $j i32)
    (block $no (loop $at
      (br_if $no (i32.gt_s (local.get $nlen) (i32.sub (local.get $len) (local.get $i))))
      (local.set $j (i32.const 0))
      (block $differ (loop $cmp
        (if (i32.ge_u (local.get $j) (local.get $nlen)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (i32.add (local.get $ptr) (i32.add (local.get $i) (local.get $j))))
                               (i32.load8_u (i32.add (local.get $nptr) (local.get $j)))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $cmp)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $at)))
    (i32.const 0))

  ;; --- the filter of filter_on_a and filter_param --------------------------------------
  ;; Keeps the records whose value contains [nptr, nptr+nlen); a value that is not UTF-8 stops
  ;; the call with Rust's Utf8Error text as the error (kind Filter).
  (func $filter_containing (param $nptr i32) (param $nlen i32) (result i32)
    (local $valid i32)
    (call $out_begin)
    (block $done (loop $each
      (br_if $done (i32.eqz (call $next_record)))
      (local.set $valid (call $utf8 (global.get $vptr) (global.get $vlen)))
      (if (i32.ge_s (local.get $valid) (i32.const 0))
        (then (return (call $finish (i32.const 256) (call $utf8_hint (local.get $valid)) (i32.const 0)))))
      (if (call $contains (global.get $vptr) (global.get $vlen) (local.get $nptr) (local.get $nlen))
        (then (call $emit_record)))
      (br $each)))
    (call $finish (i32.const 0) (i32.const -1) (i32.const 0)))
