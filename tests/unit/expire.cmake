shoal_test(expire_test SOURCES unit/expire_test.c LIBS shoal_agent
           CASES which_tombstones_go steps_resume forget_deleted_setting)
