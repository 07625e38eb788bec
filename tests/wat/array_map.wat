;; array_map: a value holding a JSON array becomes one record per element, the element's JSON
;; text as value (no key, deltas 0, as Fluvio's array_map output records are new records).
;;
;; A scanner, not a JSON parser: it finds the elements of the top-level array (tracking strings
;; and nesting so that commas inside them do not split) and emits each element's text as written,
;; without its surrounding whitespace. Fluvio's module parses with serde_json and writes each
;; element back out, which gives the same bytes for strings without escapes or with the plain
;; ones (\" \\ \n ...), integers, decimals in shortest form, true, false and null. Where they
;; differ: serde_json rewrites numbers (1e3 -> 1000.0), \u escapes and \/, and whitespace inside
;; nested values; it rejects invalid JSON inside elements (this scanner does not look), and its
;; error texts name what it expected. An empty value is serde_json's error "EOF while parsing a
;; value at line 1 column 0"; another value that is not an array (or not closed) is this module's
;; error "not a JSON array" (kind ArrayMap). Records of a failed value are not emitted.

  (data (i32.const 512) "not a JSON array")   ;; 16
  (data (i32.const 544) "EOF while parsing a value at line 1 column 0")   ;; 44: serde_json's, for an empty value

  (func $space (param $b i32) (result i32)
    (i32.or (i32.or (i32.eq (local.get $b) (i32.const 0x20)) (i32.eq (local.get $b) (i32.const 0x09)))
            (i32.or (i32.eq (local.get $b) (i32.const 0x0a)) (i32.eq (local.get $b) (i32.const 0x0d)))))

  ;; first position at or after p (before stop) that is not whitespace
  (func $skip_space (param $p i32) (param $stop i32) (result i32)
    (block $done (loop $more
      (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
      (br_if $done (i32.eqz (call $space (i32.load8_u (local.get $p)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $more)))
    (local.get $p))

  ;; Emits the elements of the array in [p, stop); 1 when it is one, 0 when not
  (func $elements (param $p i32) (param $stop i32) (result i32)
    (local $start i32) (local $last i32) (local $b i32) (local $depth i32) (local $in_string i32)
    (local.set $p (call $skip_space (local.get $p) (local.get $stop)))
    (if (i32.ge_u (local.get $p) (local.get $stop)) (then (return (i32.const 0))))
    (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 0x5b)) (then (return (i32.const 0))))
    (local.set $p (call $skip_space (i32.add (local.get $p) (i32.const 1)) (local.get $stop)))
    (if (i32.lt_u (local.get $p) (local.get $stop))          ;; "[]"
      (then (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x5d))
        (then (return (i32.eq (call $skip_space (i32.add (local.get $p) (i32.const 1)) (local.get $stop))
                              (local.get $stop)))))))
    (loop $element
      (local.set $p (call $skip_space (local.get $p) (local.get $stop)))
      (local.set $start (local.get $p))
      (local.set $last (local.get $p))                       ;; end of the element's text so far
      (local.set $depth (i32.const 0))
      (local.set $in_string (i32.const 0))
      (block $ended (loop $byte
        (if (i32.ge_u (local.get $p) (local.get $stop)) (then (return (i32.const 0))))   ;; not closed
        (local.set $b (i32.load8_u (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (if (local.get $in_string)
          (then
            (if (i32.eq (local.get $b) (i32.const 0x5c))     ;; backslash: the next byte is escaped
              (then (local.set $p (i32.add (local.get $p) (i32.const 1)))))
            (if (i32.eq (local.get $b) (i32.const 0x22)) (then (local.set $in_string (i32.const 0))))
            (local.set $last (local.get $p))
            (br $byte)))
        (if (i32.eqz (local.get $depth))
          (then (br_if $ended (i32.or (i32.eq (local.get $b) (i32.const 0x2c)) (i32.eq (local.get $b) (i32.const 0x5d))))))
        (if (i32.eq (local.get $b) (i32.const 0x22)) (then (local.set $in_string (i32.const 1))))
        (if (i32.or (i32.eq (local.get $b) (i32.const 0x5b)) (i32.eq (local.get $b) (i32.const 0x7b)))
          (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
        (if (i32.or (i32.eq (local.get $b) (i32.const 0x5d)) (i32.eq (local.get $b) (i32.const 0x7d)))
          (then (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))))
        (if (i32.eqz (call $space (local.get $b))) (then (local.set $last (local.get $p))))
        (br $byte)))
      (if (i32.eq (local.get $last) (local.get $start)) (then (return (i32.const 0))))   ;; "[1,,2]", "[1,]"
      (if (i32.gt_u (local.get $last) (local.get $stop)) (then (return (i32.const 0))))  ;; a string cut by the end
      (drop (call $emit (i64.const 0) (i64.const 0) (i32.const 0) (i32.const -1)
                        (local.get $start) (i32.sub (local.get $last) (local.get $start)) (i32.const 0) (i32.const 0)))
      (br_if $element (i32.eq (local.get $b) (i32.const 0x2c))))
    ;; after the closing bracket only whitespace
    (i32.eq (call $skip_space (local.get $p) (local.get $stop)) (local.get $stop)))

  (func (export "array_map") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $mark i32) (local $count i32)
    (local $status i32)
    (local.set $status (call $open (local.get $ptr) (local.get $len) (local.get $version)))
    (if (local.get $status) (then (return (local.get $status))))
    (call $out_begin)
    (block $done (loop $each
      (br_if $done (i32.eqz (call $next_record)))
      (local.set $mark (global.get $heap))
      (local.set $count (global.get $count))
      (global.set $attr (i32.const 0))              ;; new records
      (if (i32.eqz (global.get $vlen))
        (then (return (call $finish (i32.const 544) (i32.const 44) (i32.const 2)))))
      (if (i32.eqz (call $elements (global.get $vptr) (i32.add (global.get $vptr) (global.get $vlen))))
        (then
          ;; drop what this value emitted, then the error
          (global.set $heap (local.get $mark))
          (global.set $count (local.get $count))
          (return (call $finish (i32.const 512) (i32.const 16) (i32.const 2)))))
      (br $each)))
    (call $finish (i32.const 0) (i32.const -1) (i32.const 2)))
