;; filter_param: like filter_on_a, but the text to look for is the "key" param given to init
;; ("a" when there is none).

  (data (i32.const 512) "a")
  (data (i32.const 520) "key")
  (global $needle (mut i32) (i32.const 512))
  (global $needle_len (mut i32) (i32.const 1))

  ;; init(ptr, len, version): the input is ExtraParams (u16 count, String pairs in key order).
  ;; The needle stays where the input put it, so the heap's floor moves over the input.
  (func (export "init") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $n i32) (local $klen i32) (local $kptr i32) (local $vlen i32)
    (global.set $bad (i32.const 0))
    (global.set $version (local.get $version))
    (global.set $pos (local.get $ptr))
    (global.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $n (call $u16))
    (block $done (loop $pair
      (br_if $done (i32.or (i32.eqz (local.get $n)) (global.get $bad)))
      (local.set $klen (call $u16))
      (local.set $kptr (global.get $pos))
      (call $skip (local.get $klen))
      (local.set $vlen (call $u16))
      (if (i32.and (i32.eqz (global.get $bad))       ;; the param's name is "key"
                   (i32.and (i32.eq (local.get $klen) (i32.const 3))
                            (call $contains (local.get $kptr) (i32.const 3) (i32.const 520) (i32.const 3))))
        (then (global.set $needle (global.get $pos)) (global.set $needle_len (local.get $vlen))))
      (call $skip (local.get $vlen))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $pair)))
    (if (i32.ge_s (local.get $version) (i32.const 20))       ;; lookback: the host never sets one
      (then (if (call $u8) (then (global.set $bad (i32.const 1))))))
    (if (global.get $bad) (then (return (i32.const -10))))
    (global.set $floor (global.get $end))
    (i32.const 0))

  (func (export "filter") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $status i32)
    (local.set $status (call $open (local.get $ptr) (local.get $len) (local.get $version)))
    (if (local.get $status) (then (return (local.get $status))))
    (call $filter_containing (global.get $needle) (global.get $needle_len)))
