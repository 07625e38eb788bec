;; aggregate: appends each value to the accumulator and emits the accumulator so far as the
;; record's value (key and deltas kept); the accumulator goes back to the host after the records.
;; Both are text: an accumulator or a value that is not UTF-8 is the module's error (Rust's
;; Utf8Error text, kind Aggregate), and the accumulator handed back is the one before that record.
;; The accumulator lives in the output itself: it is the value of the last record written (or,
;; before the first, the one in the input), so each record copies it once, as Rust's Vec does.

  (func $aggregate_end (param $hint i32) (param $hint_len i32) (param $acc i32) (param $acc_len i32) (result i32)
    (call $out_records)
    (if (i32.lt_s (local.get $hint_len) (i32.const 0))
      (then (call $w_u8 (i32.const 0)))                   ;; no error
      (else (call $w_error (local.get $hint) (local.get $hint_len) (i32.const 3))))
    (if (i32.ge_s (global.get $version) (i32.const 16))   ;; AggregateOutput's accumulator, from v16
      (then (call $w_u32 (local.get $acc_len)) (call $w_bytes (local.get $acc) (local.get $acc_len))))
    (call $send))

  (func (export "aggregate") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $acc i32) (local $acc_len i32) (local $valid i32) (local $first i32)
    ;; AggregateInput: the SmartModuleInput, then the accumulator (Vec<u8>); a failure to decode
    ;; it is -11, then records that do not decode are -22 (DecodingRecords)
    (if (i32.eqz (call $input (local.get $ptr) (local.get $len) (local.get $version)))
      (then (return (i32.const -11))))
    (global.set $pos (global.get $tail))
    (global.set $end (global.get $in_end))
    (local.set $acc_len (call $u32))
    (local.set $acc (global.get $pos))
    (if (i32.eqz (call $need (local.get $acc_len))) (then (return (i32.const -11))))
    (if (i32.eqz (call $records_ok)) (then (return (i32.const -22))))
    (call $out_begin)
    (local.set $first (i32.const 1))
    (block $done (loop $each
      (br_if $done (i32.eqz (call $next_record)))
      ;; Fluvio's module checks the accumulator at every record; after one record it is UTF-8
      ;; followed by UTF-8, so checking it at the first is the same
      (if (local.get $first)
        (then
          (local.set $first (i32.const 0))
          (local.set $valid (call $utf8 (local.get $acc) (local.get $acc_len)))
          (if (i32.ge_s (local.get $valid) (i32.const 0))
            (then (return (call $aggregate_end (i32.const 256) (call $utf8_hint (local.get $valid))
                                               (local.get $acc) (local.get $acc_len)))))))
      (local.set $valid (call $utf8 (global.get $vptr) (global.get $vlen)))
      (if (i32.ge_s (local.get $valid) (i32.const 0))
        (then (return (call $aggregate_end (i32.const 256) (call $utf8_hint (local.get $valid))
                                           (local.get $acc) (local.get $acc_len)))))
      (local.set $acc (call $emit (global.get $ts) (global.get $od) (global.get $kptr) (global.get $klen)
                                  (local.get $acc) (local.get $acc_len) (global.get $vptr) (global.get $vlen)))
      (local.set $acc_len (i32.add (local.get $acc_len) (global.get $vlen)))
      (br $each)))
    (call $aggregate_end (i32.const 0) (i32.const -1) (local.get $acc) (local.get $acc_len)))
