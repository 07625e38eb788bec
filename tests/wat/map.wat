;; map: upper-cases the value's ASCII letters (other bytes stay as they are, UTF-8 or not); key,
;; deltas and attributes are kept.

  (func (export "map") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $p i32) (local $stop i32) (local $b i32)
    (local $status i32)
    (local.set $status (call $open (local.get $ptr) (local.get $len) (local.get $version)))
    (if (local.get $status) (then (return (local.get $status))))
    (call $out_begin)
    (block $done (loop $each
      (br_if $done (i32.eqz (call $next_record)))
      ;; in place: the input is this call's own memory
      (local.set $p (global.get $vptr))
      (local.set $stop (i32.add (global.get $vptr) (global.get $vlen)))
      (block $upper_done (loop $upper
        (br_if $upper_done (i32.ge_u (local.get $p) (local.get $stop)))
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.and (i32.ge_u (local.get $b) (i32.const 0x61)) (i32.le_u (local.get $b) (i32.const 0x7a)))
          (then (i32.store8 (local.get $p) (i32.sub (local.get $b) (i32.const 0x20)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $upper)))
      (call $emit_record)
      (br $each)))
    (call $finish (i32.const 0) (i32.const -1) (i32.const 1)))
