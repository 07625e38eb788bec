;; filter_map: reads the value as a decimal i32 the way Rust's str::parse::<i32> does (an
;; optional sign, then digits only) and keeps the even ones, halved, with the record's key and
;; deltas; odd ones are dropped. A value that is not such a number is the module's error, with
;; Rust's ParseIntError text (kind FilterMap).

  (data (i32.const 512) "cannot parse integer from empty string")   ;; 38
  (data (i32.const 560) "invalid digit found in string")            ;; 29
  (data (i32.const 600) "number too large to fit in target type")   ;; 38
  (data (i32.const 640) "number too small to fit in target type")   ;; 38

  ;; 0 and the number in $number, or the address of the error text (its length in $hint_len)
  (global $number (mut i32) (i32.const 0))
  (global $hint_len (mut i32) (i32.const 0))

  (func $parse_i32 (param $p i32) (param $len i32) (result i32)
    (local $stop i32) (local $neg i32) (local $acc i64) (local $d i32)
    (if (i32.eqz (local.get $len))
      (then (global.set $hint_len (i32.const 38)) (return (i32.const 512))))
    (local.set $stop (i32.add (local.get $p) (local.get $len)))
    (local.set $d (i32.load8_u (local.get $p)))
    (if (i32.or (i32.eq (local.get $d) (i32.const 0x2b)) (i32.eq (local.get $d) (i32.const 0x2d)))
      (then
        (if (i32.eq (local.get $len) (i32.const 1))          ;; a sign alone
          (then (global.set $hint_len (i32.const 29)) (return (i32.const 560))))
        (local.set $neg (i32.eq (local.get $d) (i32.const 0x2d)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))))
    ;; digit by digit, as Rust: a bad digit or the first step out of i32's range ends it
    (block $done (loop $digit
      (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
      (local.set $d (i32.sub (i32.load8_u (local.get $p)) (i32.const 0x30)))
      (if (i32.gt_u (local.get $d) (i32.const 9))
        (then (global.set $hint_len (i32.const 29)) (return (i32.const 560))))
      (local.set $acc (i64.mul (local.get $acc) (i64.const 10)))
      (if (local.get $neg)
        (then
          (local.set $acc (i64.sub (local.get $acc) (i64.extend_i32_u (local.get $d))))
          (if (i64.lt_s (local.get $acc) (i64.const -2147483648))
            (then (global.set $hint_len (i32.const 38)) (return (i32.const 640)))))
        (else
          (local.set $acc (i64.add (local.get $acc) (i64.extend_i32_u (local.get $d))))
          (if (i64.gt_s (local.get $acc) (i64.const 2147483647))
            (then (global.set $hint_len (i32.const 38)) (return (i32.const 600))))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $digit)))
    (global.set $number (i32.wrap_i64 (local.get $acc)))
    (i32.const 0))

  (func (export "filter_map") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $hint i32) (local $half i32)
    (local $status i32)
    (local.set $status (call $open (local.get $ptr) (local.get $len) (local.get $version)))
    (if (local.get $status) (then (return (local.get $status))))
    (call $out_begin)
    (block $done (loop $each
      (br_if $done (i32.eqz (call $next_record)))
      (local.set $hint (call $parse_i32 (global.get $vptr) (global.get $vlen)))
      (if (local.get $hint)
        (then (return (call $finish (local.get $hint) (global.get $hint_len) (i32.const 4)))))
      (if (i32.eqz (i32.rem_s (global.get $number) (i32.const 2)))
        (then
          ;; the half in decimal, in the scratch area
          (local.set $half (i32.div_s (global.get $number) (i32.const 2)))
          (global.set $s (i32.const 256))
          (if (i32.lt_s (local.get $half) (i32.const 0))
            (then (i32.store8 (global.get $s) (i32.const 0x2d))
                  (global.set $s (i32.const 257))
                  (local.set $half (i32.sub (i32.const 0) (local.get $half)))))
          (call $s_decimal (local.get $half))
          (drop (call $emit (global.get $ts) (global.get $od) (global.get $kptr) (global.get $klen)
                            (i32.const 256) (i32.sub (global.get $s) (i32.const 256)) (i32.const 0) (i32.const 0)))))
      (br $each)))
    (call $finish (i32.const 0) (i32.const -1) (i32.const 4)))
